"""What a replay replays: the recorded ``llm`` steps of a run, with the actions each one produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sdb.store.layout import Store
from sdb.store.views import connect, query_arrow


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

    @property
    def key(self) -> tuple[str, int]:
        return (self.session_id, self.seq)


def load_steps(store: Store, run_id: str) -> list[SourceStep]:
    """Every ``llm`` event of ``run_id``, in (session, seq) order, with its child actions' digests."""
    con = connect(store, run_id)
    actions: dict[tuple[str, int], list[int]] = {}
    rows = query_arrow(
        con,
        "SELECT session_id, parent, digest FROM events WHERE kind = 'action' AND parent IS NOT NULL "
        "ORDER BY session_id, seq",
    ).to_pylist()
    for row in rows:
        actions.setdefault((row["session_id"], row["parent"]), []).append(int(row["digest"]))
    llm = query_arrow(
        con,
        "SELECT session_id, seq, step, actor, pattern, model, prompt, payload FROM events WHERE kind = 'llm' "
        "ORDER BY session_id, seq",
    ).to_pylist()
    steps = []
    for row in llm:
        body = orjson.loads(row["payload"])
        steps.append(
            SourceStep(
                session_id=row["session_id"],
                seq=row["seq"],
                step=row["step"],
                actor=row["actor"],
                pattern=row["pattern"],
                model=row["model"],
                prompt=row["prompt"],
                request=body.get("request") or {},
                response=body.get("response"),
                variables=body.get("variables"),
                actions=tuple(actions.get((row["session_id"], row["seq"]), ())),
                content_missing=body.get("content") == "missing",
            )
        )
    return steps


def finished_units(store: Store, run_id: str) -> set[tuple[str, int, int]]:
    """(session, source seq, repeat) of every step a (partial) replay run already wrote: each step's
    events are written as one unit, so its llm (or error) event marks it finished."""
    con = connect(store, run_id)
    rows = query_arrow(
        con,
        "SELECT session_id, CAST(json_extract(payload, '$.replay.source_seq') AS BIGINT) AS src, "
        "CAST(coalesce(json_extract(payload, '$.replay.repeat'), '0') AS BIGINT) AS rep "
        "FROM events WHERE kind IN ('llm', 'error') AND json_extract(payload, '$.replay') IS NOT NULL",
    ).to_pylist()
    return {(r["session_id"], int(r["src"]), int(r["rep"])) for r in rows}
