"""The CLI reference, ``docs/cli.md``: every command's ``--help``, rendered from the app itself.

One source for the command surface: the reference is written from the code, and a test fails when the
committed file differs from what this renders (``python -m sdbctl.cli.reference > docs/cli.md``).
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.testing import CliRunner

from sdbctl.cli.main import app

WIDTH = "100"  # the terminal width the reference is rendered at: the same text on every machine


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group`` (typer's own click group), in the order ``--help`` lists them."""
    found: list[tuple[str, ...]] = []
    with typer.Context(group) as ctx:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            path = (*prefix, name)
            found.append(path)
            if hasattr(command, "list_commands"):  # a group: import, patterns
                found += _commands(command, path)
    return found


def render() -> str:
    """The whole reference, as Markdown."""
    runner = CliRunner()
    env = {"COLUMNS": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    sections = ["# sdbctl command reference", "", "Generated from `--help` by `python -m sdbctl.cli.reference`."]
    for path in [(), *_commands(typer.main.get_command(app))]:
        out = runner.invoke(app, [*path, "--help"], env=env, prog_name="sdbctl")
        title = " ".join(("sdbctl", *path))
        sections += ["", f"## `{title}`", "", "```text", out.output.rstrip(), "```"]
    return "\n".join(sections) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
