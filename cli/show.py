"""``sdbctl show``: one run's timeline."""

from __future__ import annotations

from typing import Annotated

import typer

from sdbctl.cli._listing import CsvFlag, JsonFlag, JsonlFlag, TableView, emit, pick_format
from sdbctl.cli._options import StoreOption


def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (see `sdbctl runs`).")],
    session: Annotated[str | None, typer.Option("--session", "-s", help="Only this session.")] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="Only this kind: input, llm, action, gate, ...")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to print in the table; 0 for all.")] = 200,
    width: Annotated[int, typer.Option("--width", help="Characters of payload to show.")] = 60,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Print each llm event's request whole, as it was asked (a request is stored as what is "
            "new since an earlier call of its session: a request_delta).",
        ),
    ] = False,
    store: StoreOption = None,
    json: JsonFlag = False,
    csv: CsvFlag = False,
    jsonl: JsonlFlag = False,
) -> None:
    """Show a run's timeline: seq, kind, actor, pattern, name, status, step and a short payload.

    Output: a table of the first --limit events; --json, --csv and --jsonl carry every event whole
    (every column, ts as ISO-8601): --json one array of objects with the payload parsed, --csv one
    line per event (payload as JSON text), --jsonl one object per line.

    An llm event stores what is new since an earlier call of its session (request_delta); --full
    prints its request whole.

    Example: sdbctl show 20261126-004112-a1b2c3 --session contract-42 --kind action --jsonl | jq -c .payload.args
    """
    fmt = pick_format(json=json, csv=csv, jsonl=jsonl)
    from sdbctl.sdb.query import timeline
    from sdbctl.sdb.store import Store

    t = timeline(Store.open(store), run_id, session=session, kind=kind, whole=full)
    sessions = f"session {t.sessions[0]}" if len(t.sessions) == 1 else f"{len(t.sessions)} sessions"
    view = TableView(
        columns=t.brief,
        headers={"session_id": "session"},
        title=f"run {t.run_id} · {sessions}",
        widths={"payload": width},
        styles={"kind": "magenta", "name": "cyan"},
        limit=limit,
        noun="events",
        drop=["pattern", "actor", "status", "step", "seq"],  # what a narrow terminal leaves out, in order
    )
    emit(t, t.columns, fmt, view, json_text=("payload",))
