"""docs/cli/ is the CLI's own --help: a changed option that is not in the reference fails here."""

from __future__ import annotations

from sdbctl.cli.reference import DEFAULT_DIR, render


def test_the_committed_cli_reference_is_what_the_cli_says() -> None:
    pages = render()
    assert {p.name for p in DEFAULT_DIR.glob("*.md")} == set(pages), "python -m sdbctl.cli.reference"
    for name, text in pages.items():
        assert (DEFAULT_DIR / name).read_text(encoding="utf-8") == text, (
            f"docs/cli/{name} is stale: python -m sdbctl.cli.reference"
        )


def test_the_reference_has_every_command_and_subcommand() -> None:
    pages = render()
    for command in ("runs", "show", "query", "export", "record", "proxy", "replay", "diff", "gate", "rm"):
        assert f"## `sdbctl {command}`" in pages[f"{command}.md"]
        assert f"({command}.md)" in pages["index.md"]
    assert "## `sdbctl import chat`" in pages["import.md"]
    assert "## `sdbctl patterns recommend`" in pages["patterns.md"]
    assert "--numeric-tolerance" in pages["diff.md"]  # the diff tolerance flags the README's table once missed
