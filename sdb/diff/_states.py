"""``state_changed``: the states a session entered differ. A state is a committed write of the
agent's own, so these divergences are in the ``write`` layer. By step, the states entered at each
(session, step) are compared as lists; by commit, each session's states are aligned whole, like its
actions. Both compare repeat 0: sessions ``ID#rK`` are a candidate's other repeats, compared on
actions only."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sdbctl.sdb.diff._align import align
from sdbctl.sdb.diff._outcomes import REPEAT_SUFFIX
from sdbctl.sdb.diff._results import Divergence


def states_by_step(con: Any, base: str, candidate: str) -> list[Divergence]:
    """``state_changed``: per (session, step), the states entered differ (repeat 0 of a candidate with
    repeats: sessions ``ID#rK`` are its other repeats, compared on actions only). A state is a
    committed write of the agent's own: its layer is ``write``."""
    rows = con.execute(
        f"""
        WITH s AS (SELECT run_id, session_id, coalesce(step, '') AS step, list(name ORDER BY seq) AS names,
                          min(seq) AS seq, any_value(pattern) AS pattern
                   FROM events WHERE run_id IN (?, ?) AND kind = 'state' AND name NOT LIKE 'replay:%'
                        AND name <> 'outcome'
                   GROUP BY ALL)
        SELECT coalesce(b.session_id, c.session_id), coalesce(b.step, c.step), b.seq, c.seq, b.names, c.names,
               coalesce(c.pattern, b.pattern)
        FROM (SELECT * FROM s WHERE run_id = ? AND NOT regexp_matches(session_id, '{REPEAT_SUFFIX}')) b FULL OUTER JOIN
             (SELECT * FROM s WHERE run_id = ? AND NOT regexp_matches(session_id, '{REPEAT_SUFFIX}')) c
             USING (session_id, step)
        WHERE b.names IS DISTINCT FROM c.names
          AND coalesce(b.session_id, c.session_id) IN (SELECT DISTINCT session_id FROM events WHERE run_id = ?)
    """,
        [base, candidate, base, candidate, candidate],
    ).fetchall()
    return [
        Divergence(
            session_id=session_id,
            step=step or None,
            repeat=0,
            base_seq=bseq,
            candidate_seq=cseq,
            reason="state_changed",
            base_action=",".join(bnames or []) or None,
            candidate_action=",".join(cnames or []) or None,
            pattern=pattern,
            fields=[{"path": "states", "old": bnames, "new": cnames}],
        )
        for session_id, step, bseq, cseq, bnames, cnames, pattern in rows
    ]


_STATES = f"""
SELECT run_id, regexp_replace(session_id, '{REPEAT_SUFFIX}', '') AS sid, list(name ORDER BY seq),
       list(seq ORDER BY seq), list(coalesce(step, '') ORDER BY seq), any_value(pattern)
FROM events
WHERE run_id IN (?, ?) AND kind = 'state' AND name NOT LIKE 'replay:%' AND name <> 'outcome'
  AND NOT regexp_matches(session_id, '{REPEAT_SUFFIX}')
GROUP BY ALL
"""
_AFTER_ACTIONS = 1 << 40  # states sort after the actions of their session: they follow from the writes


def states_by_commit(con: Any, base: str, candidate: str) -> tuple[list[Divergence], Counter[str]]:
    """``state_changed`` by commit: each session's states entered (repeat 0), aligned over the whole
    session like its actions, so one extra step shifts no state after it. Returns the divergences
    (write layer) and the positions compared per session."""
    found: dict[str, dict[str, tuple[list[str], list[int], list[str], str | None]]] = defaultdict(dict)
    for run, sid, names, seqs, steps, pattern in con.execute(_STATES, [base, candidate]).fetchall():
        found[sid][run] = (list(names), list(seqs), list(steps), pattern)
    empty: tuple[list[str], list[int], list[str], str | None] = ([], [], [], None)
    out: list[Divergence] = []
    units: Counter[str] = Counter()
    for sid, sides in found.items():
        (bn, bs, bst, bp), (cn, cs, cst, cp) = sides.get(base, empty), sides.get(candidate, empty)
        pairs = align([hash(n) for n in bn], [hash(n) for n in cn])
        units[sid] += len(pairs)
        for k, pair in enumerate(pairs):
            if pair.equal:
                continue
            old = bn[pair.base] if pair.base is not None else None
            new = cn[pair.candidate] if pair.candidate is not None else None
            out.append(
                Divergence(
                    session_id=sid,
                    step=(bst[pair.base] if pair.base is not None else cst[pair.candidate or 0]) or None,
                    repeat=0,
                    base_seq=bs[pair.base] if pair.base is not None else None,
                    candidate_seq=cs[pair.candidate] if pair.candidate is not None else None,
                    reason="state_changed",
                    base_action=old,
                    candidate_action=new,
                    pattern=cp or bp,
                    fields=[{"path": "state", "old": old, "new": new}],
                    order=_AFTER_ACTIONS + k,
                )
            )
    return out, units
