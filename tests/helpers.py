"""Recording a bundled workload and reading back what it wrote: one version of each, for every test file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from sdbctl.recorders.workload import RecordSummary, record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.events import read_events, whole_payload, with_requests
from sdbctl.sdb.query import read_only_query
from sdbctl.sdb.store import Store


def record_run(store: Path, workload: str, run_id: str, sessions: int = 30, **kw: Any) -> RecordSummary:
    """``sessions`` sessions of the bundled ``workload`` (``contract-renewal``, ``support-triage``,
    ``research``) recorded in ``store`` as ``run_id``; ``kw`` as :func:`record_workload` takes them."""
    return record_workload(load_agent(workload), workload, sessions=sessions, store=str(store), run_id=run_id, **kw)


def query_rows(store: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` over the store's views (``events``, ``runs``, ``requests`` ...), as
    ``sdbctl query`` runs it."""
    return read_only_query(Store.open(store), sql)[1]


def run_events(store: Path, run_id: str, *, payloads: bool = False) -> list[dict[str, Any]]:
    """Every event of the run as a dict, by session then ``seq``; ``payloads``: each payload parsed from
    its JSON text."""
    rows = sorted(
        read_events(Store.open(store).part_paths(run_id)).to_pylist(), key=lambda e: (e["session_id"], e["seq"])
    )
    if payloads:  # each llm payload with its request whole, as every reader of the store gets it
        llm = {(r["session_id"], r["seq"]): body for r, body, _ in with_requests_whole(rows)}
        for row in rows:
            row["payload"] = llm.get((row["session_id"], row["seq"])) or orjson.loads(row["payload"])
    return rows


def with_requests_whole(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    """The llm events of ``rows`` (ordered by session and seq) as ``(row, payload with its request
    whole, request)``."""
    llm = [r for r in rows if r["kind"] == "llm"]
    return [(row, whole_payload(body, request), request) for row, body, request in with_requests(llm, "test")]


def action_digests(store: Path, run_id: str) -> list[tuple[str, int, int]]:
    """Every action of the run as (session, seq, digest), in order: what "the same run" compares."""
    return [(e["session_id"], e["seq"], e["digest"]) for e in run_events(store, run_id) if e["kind"] == "action"]


def ground_truth(store: Path, run_id: str) -> list[dict[str, Any]]:
    """The simulator's ground truth of a replayed run (``truth.jsonl``): what each step's answer changed."""
    text = (store / "runs" / run_id / "truth.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def embedded_view(path: Path) -> dict[str, Any]:
    """The data a ``--html`` file (the page of ``sdbctl view`` as one file) embeds, parsed: its header
    (summary, verdict), the sessions' rows, the details and the note of what was left out."""
    text = path.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="sdb-data">') + len(
        '<script type="application/json" id="sdb-data">'
    )
    data: dict[str, Any] = json.loads(text[start : text.index("</script>", start)])
    return data
