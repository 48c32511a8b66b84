"""``sdbctl import``: runs from logs other tools wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import JsonOption, StoreOption

app = typer.Typer(
    help="Import runs from logs and traces other tools wrote.\n\nExample: sdbctl import jsonl agent.log --map map.toml",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("jsonl")
def import_jsonl(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A JSON-lines log, one event per line.")],
    map_file: Annotated[Path, typer.Option("--map", help="The TOML map: JSON field of each column, [kinds].")],
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Import the good lines, count the bad ones.")] = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Import a JSON-lines log as a run, all or nothing: a bad line is FILE:LINE and exit 2.

    Example: sdbctl import jsonl agent.log --map map.toml --run-id prod-2026-11
    """
    from cli.render import err_console, print_json
    from recorders.importers.jsonl import import_jsonl as run_import

    summary = run_import(str(store) if store else None, file, map_file, run_id=run_id, skip_bad=skip_bad)
    if json:
        print_json(summary.as_dict())
        return
    typer.echo(summary.run_id)
    err_console.print(
        f"{summary.events} events in {summary.sessions} sessions"
        + (f"; {summary.skipped} bad lines skipped" if summary.skipped else ""),
        highlight=False,
    )
