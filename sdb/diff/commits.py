"""The comparison by commit: what each session of two closed-loop runs actually did, aligned whole.

When both runs ran the agent (recordings, imports, session-mode replays), a proposal that was refused,
failed or retried is not what the agent did: the committed actions are. Per session, repeat and layer,
each run's *committed* actions (status ok, and an effect that succeeded, or no effect recorded for any
action of that name in the run; see :data:`sdb.diff.differ._ACTIONS`) are compared first as digest lists
in DuckDB; only the lists that differ come to Python, where they are aligned over the whole session
(:func:`sdb.diff.align.align_by_name`): one extra lookup or one failed-then-retried call shifts nothing
after it. Uncommitted actions are counted apart (``attempts``); an unpaired committed action whose twin
on the other side was refused by a guard, or failed validation, is ``gate_changed`` or ``invalid``
instead of ``missing``/``extra``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa

from sdb.diff.align import align_by_name, reordered
from sdb.diff.config import LAYERS, DiffConfig
from sdb.diff.differ import Compared, Divergence, _rows, divergence, explain, states_changed

_LISTS = """
WITH gb AS (SELECT session_id, layer, list(digest ORDER BY seq) AS ds FROM b WHERE committed GROUP BY ALL),
     gc AS (SELECT session_id, rep, layer, list(digest ORDER BY seq) AS ds FROM c WHERE committed GROUP BY ALL),
     reps AS (SELECT DISTINCT rep FROM c UNION SELECT 0),
     keys AS (SELECT DISTINCT session_id, layer FROM b UNION SELECT DISTINCT session_id, layer FROM c),
     grid AS (SELECT keys.session_id, keys.layer, reps.rep FROM keys CROSS JOIN reps)
SELECT grid.session_id, grid.rep, grid.layer, coalesce(len(gb.ds), 0) AS nb, coalesce(len(gc.ds), 0) AS nc,
       gb.ds IS NOT DISTINCT FROM gc.ds OR (gb.ds IS NULL AND gc.ds IS NULL) AS same
FROM grid LEFT JOIN gb USING (session_id, layer) LEFT JOIN gc USING (session_id, rep, layer)
WHERE grid.rep IN (SELECT rep FROM c) OR NOT EXISTS (SELECT 1 FROM c)
"""


def _attempts(con: Any, table: str) -> dict[str, int]:
    rows = con.execute(
        f"SELECT CASE WHEN status = 'ok' THEN 'failed' ELSE status END, count(*) FROM {table} "
        "WHERE NOT committed GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return {str(k): int(v) for k, v in rows}


def compare_commits(con: Any, base: str, candidate: str, config: DiffConfig) -> Compared:
    """Compare the committed actions of every session of the staged tables ``b`` and ``c``."""
    repeats = [int(r[0]) for r in con.execute("SELECT DISTINCT rep FROM c ORDER BY 1").fetchall()] or [0]
    units: dict[str, Counter[str]] = {layer: Counter() for layer in LAYERS}
    diverged: dict[str, Counter[str]] = {layer: Counter() for layer in LAYERS}
    mismatched: list[tuple[str, int, str]] = []
    for session_id, rep, layer, nb, _nc, same in con.execute(_LISTS).fetchall():
        if same:
            units[layer][session_id] += nb
        else:
            mismatched.append((session_id, int(rep), layer))
    divergences: list[Divergence] = []
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]] = []
    if mismatched:
        con.register(
            "mm",
            pa.table(
                {
                    "session_id": [m[0] for m in mismatched],
                    "rep": pa.array([m[1] for m in mismatched], pa.int64()),
                    "layer": [m[2] for m in mismatched],
                }
            ),
        )
        base_rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        cand_rows: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
        for row in _rows(
            con,
            "SELECT b.*, e.payload FROM b JOIN (SELECT DISTINCT session_id, layer FROM mm) USING (session_id, layer) "
            "JOIN events e ON e.run_id = $run AND e.session_id = b.raw_sid AND e.seq = b.seq ORDER BY b.seq",
            {"run": base},
        ):
            base_rows[(row["session_id"], row["layer"])].append(row)
        for row in _rows(
            con,
            "SELECT c.*, e.payload FROM c JOIN mm USING (session_id, rep, layer) "
            "JOIN events e ON e.run_id = $run AND e.session_id = c.raw_sid AND e.seq = c.seq ORDER BY c.seq",
            {"run": candidate},
        ):
            cand_rows[(row["session_id"], row["rep"], row["layer"])].append(row)
        for session_id, rep, layer in sorted(mismatched):
            found, positions = _session(
                session_id, rep, base_rows[(session_id, layer)], cand_rows[(session_id, rep, layer)], pending
            )
            units[layer][session_id] += positions
            divergences += found
    divergences += explain(pending, config, True)
    states = states_changed(con, base, candidate)
    divergences += states
    for session_id, n in con.execute(
        "SELECT session_id, count(DISTINCT coalesce(step, '')) FROM events WHERE run_id = ? AND kind = 'state' "
        "AND name NOT LIKE 'replay:%' AND name <> 'outcome' GROUP BY 1",
        [base],
    ).fetchall():
        units["write"][session_id] += n
    divergences.sort(key=lambda d: (d.session_id, d.repeat, d.layer, _order(d)))
    for d in divergences:
        diverged[d.layer][d.session_id] += 1
    failures = sum(
        n
        for (n,) in con.execute(
            "SELECT greatest(coalesce(c.n, 0) - coalesce(b.n, 0), 0) FROM "
            "(SELECT session_id, rep, count(*) AS n FROM c WHERE status = 'parse_failed' GROUP BY ALL) c "
            "LEFT JOIN (SELECT session_id, count(*) AS n FROM b WHERE status = 'parse_failed' GROUP BY ALL) b "
            "USING (session_id)"
        ).fetchall()
    )

    def noise(con: Any, config: DiffConfig) -> dict[str, float]:
        return _repeat_noise(con, config.layers)

    return Compared(
        divergences,
        units,
        diverged,
        repeats,
        attempts={"base": _attempts(con, "b"), "candidate": _attempts(con, "c")},
        parse_failures=int(failures),
        noise=noise,
    )


def _order(d: Divergence) -> tuple[int, int]:
    return (d.base_seq if d.base_seq is not None else -1, d.candidate_seq if d.candidate_seq is not None else -1)


def _session(
    session_id: str,
    rep: int,
    base: list[dict[str, Any]],
    cand: list[dict[str, Any]],
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]],
) -> tuple[list[Divergence], int]:
    """One session's (repeat's, layer's) divergences by commit, and how many positions it compared."""
    bc = [r for r in base if r["committed"]]
    cc = [r for r in cand if r["committed"]]
    out: list[Divergence] = []

    def div(reason: str, b: dict[str, Any] | None, c: dict[str, Any] | None) -> Divergence:
        found = divergence(reason, b, c, session_id=session_id, rep=rep)
        out.append(found)
        return found

    bd = [int(r["digest"]) for r in bc]
    cd = [int(r["digest"]) for r in cc]
    if reordered(bd, cd):
        for bb, cx in zip(bc, cc, strict=True):
            if bb["digest"] != cx["digest"]:
                div("reordered", bb, cx)
        return out, len(bd)
    # an unpaired commit whose twin on the other side was refused or invalid says why
    base_refused = {int(r["digest"]): r for r in base if not r["committed"] and r["status"] in ("gated", "invalid")}
    cand_refused = {int(r["digest"]): r for r in cand if not r["committed"] and r["status"] in ("gated", "invalid")}
    pairs = align_by_name(bd, [r["name"] for r in bc], cd, [r["name"] for r in cc])
    for pair in pairs:
        b = bc[pair.base] if pair.base is not None else None
        c = cc[pair.candidate] if pair.candidate is not None else None
        if pair.equal:
            continue
        if b is not None and c is None:
            twin = cand_refused.get(int(b["digest"]))
            if twin is not None:
                div("gate_changed" if twin["status"] == "gated" else "invalid", b, twin)
            else:
                div("missing", b, None)
        elif c is not None and b is None:
            twin = base_refused.get(int(c["digest"]))
            if twin is not None:
                div("gate_changed" if twin["status"] == "gated" else "invalid", twin, c)
            else:
                div("extra", None, c)
        elif b is not None and c is not None:
            if b["name"] != c["name"]:
                div("tool_changed", b, c)
            else:
                pending.append((div("args_changed", b, c), b, c))
                out.pop()
    return out, len(pairs)


def _repeat_noise(con: Any, layers: tuple[str, ...]) -> dict[str, float]:
    """The noise floor from the candidate's repeats: per session, the share of aligned positions (in
    ``layers``) where repeat k >= 1 differs from repeat 0, over every k (digests, no tolerance)."""
    con.register("noise_layers", pa.table({"layer": list(layers)}))
    lists: dict[tuple[str, str], dict[int, tuple[list[int], list[str]]]] = defaultdict(dict)
    for session_id, rep, layer, ds, ns in con.execute(
        "SELECT session_id, rep, layer, list(digest ORDER BY seq), list(name ORDER BY seq) FROM c "
        "WHERE committed AND layer IN (SELECT layer FROM noise_layers) GROUP BY ALL"
    ).fetchall():
        lists[(session_id, layer)][int(rep)] = ([int(x) for x in ds], list(ns))
    reps = [int(r[0]) for r in con.execute("SELECT DISTINCT rep FROM c WHERE rep > 0").fetchall()]
    positions: Counter[str] = Counter()
    differ: Counter[str] = Counter()
    for (session_id, _layer), by_rep in lists.items():
        zd, zn = by_rep.get(0, ([], []))
        for rep in reps:
            kd, kn = by_rep.get(rep, ([], []))
            if zd == kd:
                positions[session_id] += len(zd)
                continue
            pairs = align_by_name(zd, zn, kd, kn)
            positions[session_id] += len(pairs)
            differ[session_id] += sum(not p.equal for p in pairs)
    return {s: differ[s] / n for s, n in positions.items() if n}
