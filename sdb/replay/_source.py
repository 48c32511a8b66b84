"""What a replay replays: the recorded ``llm`` steps of a run, with the actions each one produced."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from sdbctl.sdb.errors import QueryError, SchemaError
from sdbctl.sdb.events import with_requests
from sdbctl.sdb.store import Store, connect, query_arrow


@dataclass(frozen=True)
class SourceStep:
    """One recorded model call: its place, its context, its answer, and the digests of its actions."""

    session_id: str
    seq: int
    step: str | None
    actor: str
    pattern: str
    model: str | None
    prompt: str | None
    request: dict[str, Any]
    response: Any
    variables: dict[str, Any] | None
    actions: tuple[int, ...]
    content_missing: bool = False  # recorded without its messages (a trace without content): not asked


_STEPS_SQL = """
WITH a AS (
    SELECT session_id, parent, list(digest ORDER BY seq) AS digests
    FROM events WHERE kind = 'action' AND parent IS NOT NULL GROUP BY ALL
)
SELECT l.session_id, l.seq, l.step, l.actor, l.pattern, l.model, l.prompt, l.payload, a.digests
FROM events l LEFT JOIN a ON a.session_id = l.session_id AND a.parent = l.seq
WHERE l.kind = 'llm' {where}
ORDER BY l.session_id, l.seq
"""


def _step(row: dict[str, Any], body: dict[str, Any], request: Any, run_id: str) -> SourceStep:
    if request is not None and not isinstance(request, dict):  # a request is what a chat API is sent
        raise SchemaError(
            f"run {run_id!r} is damaged: the llm event {row['session_id']!r}#{row['seq']} holds a request "
            f"that is a {type(request).__name__}, not an object"
        )
    return SourceStep(
        session_id=row["session_id"],
        seq=row["seq"],
        step=row["step"],
        actor=row["actor"],
        pattern=row["pattern"],
        model=row["model"],
        prompt=row["prompt"],
        request=request or {},
        response=body.get("response"),
        variables=body.get("variables"),
        actions=tuple(int(d) for d in row["digests"] or ()),
        content_missing=body.get("content") == "missing",
    )


def iter_steps(
    store: Store, run_id: str, *, batch: int = 2_000, sessions: Iterable[str] | None = None
) -> Iterator[list[SourceStep]]:
    """Every ``llm`` event of ``run_id`` (or of ``sessions``) with its child actions' digests and its
    request whole, by session and seq, ``batch`` steps at a time: streamed, so that a replay of
    millions of steps holds one batch of requests (and one session's stored payloads) in memory, not
    the run. Requests rebuilt from one session share their history's messages."""
    con = connect(store, run_id)
    where = ""
    if sessions is not None:
        con.register("_wanted", pa.table({"session_id": pa.array(sorted(set(sessions)), pa.string())}))
        where = "AND l.session_id IN (SELECT session_id FROM _wanted)"
    try:
        reader = con.sql(_STEPS_SQL.format(where=where)).to_arrow_reader(batch)
    except duckdb.Error as exc:
        raise QueryError(f"run {run_id}: cannot read its steps ({str(exc).splitlines()[0]})") from None
    rows = (row for record_batch in reader or () for row in record_batch.to_pylist())
    pending: list[SourceStep] = []
    for row, body, request in with_requests(rows, f"run {run_id}"):
        pending.append(_step(row, body, request, run_id))
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


def count_steps(store: Store, run_id: str) -> tuple[dict[str, int], int]:
    """How many replayable ``llm`` steps each session of ``run_id`` has, and how many steps were
    recorded without their content (not replayable)."""
    rows = query_arrow(
        connect(store, run_id),
        "SELECT session_id, count(*) FILTER (WHERE coalesce(payload->>'$.content', '') <> 'missing') AS n, "
        "count(*) FILTER (WHERE payload->>'$.content' = 'missing') AS missing "
        "FROM events WHERE kind = 'llm' GROUP BY 1",
    ).to_pylist()
    return {str(r["session_id"]): int(r["n"]) for r in rows if r["n"]}, sum(int(r["missing"]) for r in rows)


_FINISHED_SQL = """
WITH a AS (
    SELECT session_id, parent, list(digest ORDER BY seq) AS digests
    FROM events WHERE kind = 'action' AND parent IS NOT NULL GROUP BY ALL
)
SELECT l.session_id, l.kind,
       CAST(json_extract(l.payload, '$.replay.source_seq') AS BIGINT) AS src,
       CAST(coalesce(json_extract(l.payload, '$.replay.repeat'), '0') AS BIGINT) AS rep, a.digests
FROM events l LEFT JOIN a ON a.session_id = l.session_id AND a.parent = l.seq
WHERE l.kind IN ('llm', 'error') AND json_extract(l.payload, '$.replay.source_seq') IS NOT NULL
"""


def finished_units(store: Store, run_id: str) -> dict[tuple[str, int, int], tuple[int, ...] | None]:
    """(session, source seq, repeat) of every step a (partial) replay run already wrote, with the
    digests of the actions its answer proposed (None: the step's provider error). Each step's events
    are written as one unit, so its llm (or error) event marks it finished; its actions let a resume
    count its divergence as the attempt that wrote it did."""
    rows = query_arrow(connect(store, run_id), _FINISHED_SQL).to_pylist()
    return {
        (r["session_id"], int(r["src"]), int(r["rep"])): (
            None if r["kind"] == "error" else tuple(int(d) for d in r["digests"] or ())
        )
        for r in rows
    }
