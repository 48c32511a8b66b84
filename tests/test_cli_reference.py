"""docs/cli.md is the CLI's own --help: a changed option that is not in the reference fails here."""

from __future__ import annotations

from pathlib import Path

from sdbctl.cli.reference import render

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_the_committed_cli_reference_is_what_the_cli_says() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is stale: python -m sdbctl.cli.reference > docs/cli.md"
    )


def test_the_reference_has_every_command_and_subcommand() -> None:
    text = render()
    for command in ("runs", "show", "query", "export", "record", "proxy", "replay", "diff", "gate", "rm"):
        assert f"## `sdbctl {command}`" in text
    assert "## `sdbctl import chat`" in text and "## `sdbctl patterns recommend`" in text
    assert "--numeric-tolerance" in text  # the diff tolerance flags the README's table once missed
