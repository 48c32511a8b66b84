"""Commands that read a store: ``runs``, ``show``, ``query``, ``export``."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sdbctl.cli._options import JsonOption, StoreOption

RUN_KEYS = ("run_id", "created", "source_run", "model", "prompts", "sessions", "events", "status")
TIMELINE = ("seq", "kind", "actor", "pattern", "name", "status", "step", "payload")


class ExportFormat(enum.StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"
    chat = "chat"


def runs(store: StoreOption = None, json: JsonOption = False) -> None:
    """List the runs in the store, oldest first.

    Example: sdbctl runs --json | jq '.[] | select(.status == "partial") | .run_id'
    """
    from sdbctl.cli._render import note, print_json, print_table
    from sdbctl.sdb.store import Store

    manifests = Store.open(store).manifests()
    rows = [{k: getattr(m, k) for k in RUN_KEYS} for m in manifests]
    if json:
        print_json(rows)
        return
    if not rows:
        note(f"no runs in store {Store.open(store).uri}")
        return
    print_table(
        ["run id", "created", "source run", "model", "prompts", "sessions", "events", "status"],
        [[r[k] if k != "created" else r[k][:19].replace("T", " ") for k in RUN_KEYS] for r in rows],
        styles={"run id": "cyan", "status": "bold"},
    )


def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (see `sdbctl runs`).")],
    session: Annotated[str | None, typer.Option("--session", "-s", help="Only this session.")] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="Only this kind: input, llm, action, gate, ...")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to print in the table; 0 for all.")] = 200,
    width: Annotated[int, typer.Option("--width", help="Characters of payload to show.")] = 60,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Show a run's timeline: seq, kind, actor, pattern, name, status, step and a short payload.

    Example: sdbctl show 20261126-004112-a1b2c3 --session contract-42 --kind action
    """
    from sdbctl.cli._render import note, print_json, print_table
    from sdbctl.sdb.events.kinds import KINDS
    from sdbctl.sdb.names import check_choice
    from sdbctl.sdb.store import Store
    from sdbctl.sdb.store.read import event_dicts, run_events

    if kind is not None:
        check_choice(kind, KINDS, "--kind")
    st = Store.open(store)
    run_id = st.resolve(run_id)  # @latest: the output names the run it is
    table = run_events(st, run_id, session=session, kind=kind)
    if json:
        print_json(list(event_dicts(table)))
        return
    sessions = table.column("session_id").unique().to_pylist() if table.num_rows else []
    columns = (["session"] if len(sessions) > 1 else []) + list(TIMELINE)
    shown = table if limit <= 0 else table.slice(0, limit)
    rows: list[list[Any]] = []
    for ev in shown.to_pylist():
        row = [ev["session_id"]] if len(sessions) > 1 else []
        row += [ev[c] for c in TIMELINE]
        rows.append(row)
    title = f"run {run_id}" + (f" · session {sessions[0]}" if len(sessions) == 1 else f" · {len(sessions)} sessions")
    print_table(columns, rows, title=title, widths={"payload": width}, styles={"kind": "magenta", "name": "cyan"})
    if shown.num_rows < table.num_rows:
        note(f"{table.num_rows - shown.num_rows} more events; use --limit 0 to show all, or --json")


def query(
    sql: Annotated[str, typer.Argument(metavar="SQL", help="A DuckDB SQL query over the views.")],
    run_id: Annotated[str | None, typer.Option("--run", "-r", help="Lay `events` over this run only (faster).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to print in the table; 0 for all.")] = 1000,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Run SQL with DuckDB over the views `events` (one row per event), `runs` (one per run) and
    `divergences`. Read-only: one SELECT (or EXPLAIN); COPY, ATTACH, CREATE, INSTALL, SET ... are
    refused, and files outside the store cannot be read.

    Example: sdbctl query "SELECT run_id, kind, count(*) AS n FROM events GROUP BY ALL ORDER BY n DESC"
    """
    from sdbctl.cli._render import note, print_csv, print_json, print_table
    from sdbctl.sdb.query import read_only_query
    from sdbctl.sdb.store import Store

    columns, rows = read_only_query(Store.open(store), sql, run_id)
    if json:
        print_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif as_csv:
        print_csv(columns, rows)
    else:
        shown = rows if limit <= 0 else rows[:limit]
        print_table(columns, shown, widths={c: 80 for c in columns})
        if len(shown) < len(rows):
            note(f"{len(rows) - len(shown)} more rows; use --limit 0, --json or --csv")


def export(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id to export.")],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="jsonl (events), parquet (events) or chat (one conversation per session)."),
    ] = ExportFormat.jsonl,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file; JSONL and chat go to stdout when omitted.")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export every event of a run to one JSONL or Parquet file (Parquet keeps the event schema), or
    every session as one OpenAI chat-format conversation per JSON line (--format chat).

    A chat line is {"id", "messages"} (+ "outcome", "model", "tools", and "repeat": K for a session
    ID#rK): the session's last llm request, its answer, then the tool results recorded after it; a
    failed tool result carries "is_error": true. `sdbctl import chat` reads it back with no map.

    Example: sdbctl export RUN --format parquet --out run.parquet  ·  sdbctl export RUN --format chat -o chat.jsonl
    """
    from sdbctl.cli._render import note
    from sdbctl.sdb.store import Store

    target: Any = out if out is not None else sys.stdout.buffer
    if fmt == ExportFormat.chat:
        from sdbctl.recorders.importers.chat import write_chat

        report = write_chat(Store.open(store), run_id, target)
        skipped = f"; {len(report.skipped)} sessions with no chat call skipped" if report.skipped else ""
        partial = (
            f"; {len(report.partial)} sessions hold calls outside their last call's history (only it is exported)"
            if report.partial
            else ""
        )
        if out is not None or skipped or partial:
            note(
                f"wrote {report.conversations} conversations"
                + (f" to {out}" if out is not None else "")
                + skipped
                + partial
            )
        return
    from sdbctl.sdb.store.read import export_run

    n = export_run(Store.open(store), run_id, "parquet" if fmt == ExportFormat.parquet else "jsonl", target)
    if out is not None:
        note(f"wrote {n} events to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(runs)
    app.command()(show)
    app.command()(query)
    app.command()(export)
