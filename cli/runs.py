"""``sdbctl runs``: the runs in the store."""

from __future__ import annotations

from sdbctl.cli._listing import CsvFlag, JsonFlag, JsonlFlag, TableView, emit, pick_format
from sdbctl.cli._options import StoreOption


def _minute(created: str | None) -> str | None:
    """``2026-11-26T00:41:12.345678+00:00`` as ``2026-11-26 00:41:12``: a table cell, not a timestamp
    (None: a damaged run's, whose manifest is not believed)."""
    return created[:19].replace("T", " ") if created is not None else None


def runs(store: StoreOption = None, json: JsonFlag = False, csv: CsvFlag = False, jsonl: JsonlFlag = False) -> None:
    """List the runs in the store, oldest first.

    A row per run: run id, created, source run, model, prompt versions, sessions, events, status
    (complete, partial, or damaged: a manifest that is not valid or names another run, a part
    missing; a warning on stderr says what; only `sdbctl rm` reads a damaged run).

    Output: a table; --json one array of objects keyed run_id, created, source_run, model, prompts,
    sessions, events, status; --csv the same columns (prompts as JSON text); --jsonl one object per line.

    Example: sdbctl runs --json | jq '.[] | select(.status == "partial") | .run_id'
    """
    fmt = pick_format(json=json, csv=csv, jsonl=jsonl)
    from sdbctl.sdb.query import RUN_COLUMNS, run_rows
    from sdbctl.sdb.store import Store

    st = Store.open(store)
    view = TableView(
        headers={"run_id": "run id", "source_run": "source run"},
        styles={"run_id": "cyan", "status": "bold"},
        cells={"created": _minute},
        empty=f"no runs in store {st.uri}",
        drop=["prompts", "source_run", "created", "events", "model", "sessions"],  # never the id or status
    )
    emit(run_rows(st), RUN_COLUMNS, fmt, view)
