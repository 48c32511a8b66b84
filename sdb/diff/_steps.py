"""The comparison by step: a step-mode replay (teacher-forced, so step k of both runs answered the
same question), or two closed-loop runs compared with ``--align step``.

Actions are grouped by (session, step); DuckDB pairs both runs' actions by rank in the group and
flags the groups where a digest, status or count differs; only those come to Python, where they are
aligned, classified and explained. Candidate provider errors are reported apart and their steps are
not compared. When the candidate ran the agent, states (``state_changed``) and guard verdicts
(``gate_changed``) are compared too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from sdbctl.sdb.diff._align import Pair, align, reordered
from sdbctl.sdb.diff._compared import Compared, Pending, divergence
from sdbctl.sdb.diff._config import LAYERS, DiffConfig
from sdbctl.sdb.diff._explain import explain
from sdbctl.sdb.diff._found import Found
from sdbctl.sdb.diff._results import Divergence
from sdbctl.sdb.diff._states import states_by_step

_FAILED = ("parse_failed", "invalid")

_KEY_SCHEMA = pa.schema([pa.field("session_id", pa.string()), pa.field("step", pa.string())])


def compare_steps(
    con: Any, base: str, candidate: str, config: DiffConfig, closed_loop: bool, errors: list[dict[str, Any]]
) -> Compared:
    """The comparison by step (see the module docstring) of the staged tables ``b`` and ``c``."""
    errored = {(e["session_id"], e["step"]) for e in errors}
    con.register(
        "errored",
        pa.table({"session_id": [e[0] for e in errored], "step": [e[1] for e in errored]}, schema=_KEY_SCHEMA),
    )
    repeats = [r[0] for r in con.execute("SELECT DISTINCT rep FROM c ORDER BY 1").fetchall()] or [0]
    # digests first, in DuckDB: the groups where anything differs
    mismatched = con.execute("""
        WITH rb AS (SELECT *, row_number() OVER (PARTITION BY session_id, step ORDER BY seq) AS k FROM b),
             rc AS (SELECT *, row_number() OVER (PARTITION BY session_id, step, rep ORDER BY seq) AS k FROM c),
             reps AS (SELECT DISTINCT rep FROM c UNION SELECT 0),
             rbr AS (SELECT rb.*, reps.rep AS r FROM rb CROSS JOIN reps)
        SELECT DISTINCT coalesce(rbr.session_id, rc.session_id), coalesce(rbr.step, rc.step), coalesce(rbr.r, rc.rep)
        FROM rbr FULL OUTER JOIN rc ON rbr.session_id = rc.session_id AND rbr.step = rc.step AND rbr.r = rc.rep
             AND rbr.k = rc.k
        WHERE rbr.digest IS DISTINCT FROM rc.digest OR rbr.status IS DISTINCT FROM rc.status
    """).fetchall()
    groups = {(s, st, int(r)) for s, st, r in mismatched}
    # steps per session and layer, counted in DuckDB (a million-event run has hundreds of thousands of
    # steps); a state step counts in the write layer; errored steps are left out
    states = (
        " UNION SELECT DISTINCT 'write', session_id, coalesce(step, '') FROM events WHERE run_id = $base"
        " AND kind = 'state' AND name NOT LIKE 'replay:%' AND name <> 'outcome'"
        if closed_loop
        else ""
    )
    units: dict[str, Counter[str]] = {layer: Counter() for layer in LAYERS}
    for layer, session, n in con.execute(
        "SELECT layer, session_id, count(*) FROM (SELECT DISTINCT layer, session_id, step FROM b UNION "
        "SELECT DISTINCT layer, session_id, step FROM c" + states + ") x "
        "WHERE NOT EXISTS (SELECT 1 FROM errored e WHERE e.session_id = x.session_id AND e.step = x.step) "
        "GROUP BY ALL",
        {"base": base} if closed_loop else {},
    ).fetchall():
        units.setdefault(layer, Counter())[session] = n * len(repeats)
    found = Found("step")
    failures = 0
    wanted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for session_id, step, rep in sorted(groups):
        if (session_id, step) not in errored:
            wanted[(session_id, step)].append(rep)
    try:
        # the mismatched groups' actions stream in (session, step) order; their divergences are
        # explained and written out every CHUNK, never all in memory (sdb.diff._found)
        divergences: list[Divergence] = []
        pending: Pending = []
        for session_id, step, base_rows, cand_rows in _mismatched_rows(con, base, candidate, wanted):
            for rep in wanted[(session_id, step)]:
                divergences += _classify(session_id, step, rep, base_rows, cand_rows.get(rep, []), closed_loop, pending)
            if len(pending) >= CHUNK or len(divergences) >= CHUNK:
                failures += _write(found, divergences + explain(pending, config, closed_loop))
                divergences, pending = [], []
        failures += _write(found, divergences + explain(pending, config, closed_loop))
        if closed_loop:
            found.add(states_by_step(con, base, candidate))
    except BaseException:
        found.discard()
        raise

    def noise(con: Any, config: DiffConfig) -> dict[str, float]:
        return _repeat_disagreement(con, config.layers)

    return Compared(found, units, repeats, parse_failures=failures, noise=noise)


#: divergences (or pairs left to explain) held before they are explained and written out
CHUNK = 20_000

# both runs' actions of the mismatched groups, with their payloads, in one stream sorted by group
_ROWS = """
SELECT 'b' AS side, b.*, e.payload FROM b JOIN (SELECT DISTINCT session_id, step FROM g) USING (session_id, step)
  JOIN events e ON e.run_id = $base AND e.kind = 'action' AND e.session_id = b.raw_sid AND e.seq = b.seq
UNION ALL
SELECT 'c' AS side, c.*, e.payload FROM c JOIN g USING (session_id, step, rep)
  JOIN events e ON e.run_id = $candidate AND e.kind = 'action' AND e.session_id = c.raw_sid AND e.seq = c.seq
ORDER BY session_id, step, side, rep, seq
"""


def _write(found: Found, divergences: list[Divergence]) -> int:
    """Hand ``divergences`` to ``found``; the candidate's parse failures among them."""
    found.add(divergences)
    return sum(1 for d in divergences if d.reason == "parse_failed" and d.candidate_seq is not None)


def _mismatched_rows(
    con: Any, base: str, candidate: str, wanted: dict[tuple[str, str], list[int]]
) -> Iterator[tuple[str, str, list[dict[str, Any]], dict[int, list[dict[str, Any]]]]]:
    """Per mismatched (session, step): the base's actions and the candidate's by repeat, in seq order,
    with their payloads, read as one stream (DuckDB sorts it, spilling past its memory cap)."""
    keys = [(s, st, rep) for (s, st), reps in wanted.items() for rep in reps]
    con.register(
        "g",
        pa.table(
            {
                "session_id": pa.array([k[0] for k in keys], pa.string()),
                "step": pa.array([k[1] for k in keys], pa.string()),
                "rep": pa.array([k[2] for k in keys], pa.int64()),
            }
        ),
    )
    current: tuple[str, str] | None = None
    base_rows: list[dict[str, Any]] = []
    cand_rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for batch in con.sql(_ROWS, params={"base": base, "candidate": candidate}).to_arrow_reader(4096):
        for row in batch.to_pylist():
            key = (row["session_id"], row["step"])
            if key != current:
                if current is not None:
                    yield current[0], current[1], base_rows, cand_rows
                current, base_rows, cand_rows = key, [], defaultdict(list)
            if row.pop("side") == "b":
                base_rows.append(row)
            else:
                cand_rows[row["rep"]].append(row)
    if current is not None:
        yield current[0], current[1], base_rows, cand_rows
    con.unregister("g")


def _classify(
    session_id: str,
    step: str,
    rep: int,
    base: list[dict[str, Any]],
    cand: list[dict[str, Any]],
    closed_loop: bool,
    pending: Pending,
) -> list[Divergence]:
    """Classify one mismatched step. Same-action pairs whose digests differ go to ``pending``, to be
    explained in one batch per action (see :func:`explain`)."""
    out: list[Divergence] = []

    def div(reason: str, b: dict[str, Any] | None, c: dict[str, Any] | None) -> None:
        out.append(divergence(reason, b, c, session_id=session_id, rep=rep, step=step or None))

    bd = [int(r["digest"]) for r in base]
    cd = [int(r["digest"]) for r in cand]
    if len(bd) == 1 and len(cd) == 1:  # most mismatched steps: one action each, nothing to align or reorder
        pairs = [Pair(0, 0, bd[0] == cd[0])]
    elif reordered(bd, cd) and all(r["status"] == "ok" for r in cand):
        for bb, cc in zip(base, cand, strict=True):
            if bb["digest"] != cc["digest"]:
                div("reordered", bb, cc)
        return out
    else:
        pairs = align(bd, cd)
    for pair in pairs:
        b: dict[str, Any] | None = base[pair.base] if pair.base is not None else None
        c: dict[str, Any] | None = cand[pair.candidate] if pair.candidate is not None else None
        failed = [x["status"] for x in (c, b) if x is not None and x["status"] in _FAILED]
        if b is not None and c is not None and failed and b["status"] != c["status"]:
            div(failed[0], b, c)  # the side that failed names the reason, whichever side it is
        elif failed and (b is None or c is None):
            div(failed[0], b, c)  # an unpaired failure is still a failure, on either side
        elif b is not None and c is None:
            div("missing", b, None)
        elif c is not None and b is None:
            div("extra", None, c)
        elif b is not None and c is not None:
            if pair.equal or b["digest"] == c["digest"]:
                if closed_loop and b["status"] != c["status"]:
                    div("gate_changed", b, c)
            elif b["name"] != c["name"]:
                div("tool_changed", b, c)
            else:
                div("args_changed", b, c)
                pending.append((out.pop(), b, c))
    return out


def _repeat_disagreement(con: Any, layers: Sequence[str]) -> dict[str, float]:
    """The noise floor from repeats of a step-mode replay: per session, the share of (step, repeat >= 1)
    whose actions (in ``layers``) differ from repeat 0's."""
    con.register("noise_layers", pa.table({"layer": list(layers)}))
    rows = con.execute("""
        WITH g AS (SELECT session_id, step, rep, list(digest ORDER BY seq) AS ds FROM c
                   WHERE layer IN (SELECT layer FROM noise_layers) GROUP BY ALL)
        SELECT g.session_id, avg(CASE WHEN g.ds IS DISTINCT FROM z.ds THEN 1.0 ELSE 0.0 END)
        FROM g JOIN (SELECT * FROM g WHERE rep = 0) z USING (session_id, step)
        WHERE g.rep > 0 GROUP BY 1
    """).fetchall()
    return {s: float(r) for s, r in rows}
