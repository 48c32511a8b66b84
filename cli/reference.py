"""The CLI reference, ``docs/cli/``: every command's ``--help``, rendered from the app itself.

One source for the command surface: the reference is written from the code, one page per command (a
group's subcommands on its page) and an index, and a test fails when a committed page differs from
what this renders. ``python -m sdbctl.cli.reference`` rewrites ``docs/cli/`` (or the folder given).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from sdbctl.cli.main import app

WIDTH = "100"  # the terminal width the reference is rendered at: the same text on every machine
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "cli"
INDEX = "index.md"
GENERATED = "Generated from `--help` by `python -m sdbctl.cli.reference`; do not edit."


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


def _help(runner: CliRunner, path: tuple[str, ...]) -> list[str]:
    """One command's section: its title and its ``--help`` as the terminal shows it."""
    env = {"COLUMNS": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    out = runner.invoke(app, [*path, "--help"], env=env, prog_name="sdbctl")
    return [f"## `{' '.join(('sdbctl', *path))}`", "", "```text", out.output.rstrip(), "```", ""]


def render() -> dict[str, str]:
    """Every page of the reference (file name -> Markdown): the index, then one page per command."""
    runner = CliRunner()
    paths = _commands(typer.main.get_command(app))
    tops = [p[0] for p in paths if len(p) == 1]
    index = ["# sdbctl command reference", "", GENERATED, "", *_help(runner, ())]
    index += ["## Pages", ""] + [f"- [`sdbctl {name}`]({name}.md)" for name in tops] + [""]
    pages = {INDEX: "\n".join(index)}
    for name in tops:
        lines = [f"# `sdbctl {name}`", "", GENERATED + " [All commands](index.md).", ""]
        for path in (p for p in paths if p[0] == name):
            lines += _help(runner, path)
        pages[f"{name}.md"] = "\n".join(lines)
    return pages


def write(folder: Path) -> None:
    """Rewrite ``folder`` to hold exactly the rendered pages."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = render()
    for stale in folder.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    for name, text in pages.items():
        (folder / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
