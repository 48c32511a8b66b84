"""The comparison by commit: what each session of two closed-loop runs actually did, aligned whole.

When both runs ran the agent (recordings, imports, session-mode replays), a proposal that was refused,
failed or retried is not what the agent did: the committed actions are. Per session, repeat and layer,
each run's *committed* actions (status ok, and every effect of it succeeded; with none, unless its own
session records effects of that action name or the config says it needs one: a session's verdict never
depends on the other sessions; see :mod:`sdb.diff._staging`) are compared first as digest lists in
DuckDB; only the lists that differ come to Python, where they are aligned over the whole session
(:func:`sdb.diff._align.align_by_name`): one extra lookup or one failed-then-retried call shifts nothing
after it. Uncommitted actions are counted apart, per layer (``attempts``); an unpaired committed action
whose twin on the other side was refused by a guard, or failed validation, is ``gate_changed`` or
``invalid`` instead of ``missing``/``extra``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sdbctl.sdb.diff._align import align_by_name, reordered
from sdbctl.sdb.diff._compared import Compared, Pending, divergence
from sdbctl.sdb.diff._config import LAYERS, DiffConfig
from sdbctl.sdb.diff._explain import explain
from sdbctl.sdb.diff._found import Found
from sdbctl.sdb.diff._results import Divergence
from sdbctl.sdb.diff._states import states_by_commit

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


def _attempts(con: Any, table: str) -> dict[str, dict[str, int]]:
    """Layer -> status -> the uncommitted actions of ``table`` (``failed``: status ok, but its effect
    failed or is missing)."""
    rows = con.execute(
        f"SELECT layer, CASE WHEN status = 'ok' THEN 'failed' ELSE status END, count(*) FROM {table} "
        "WHERE NOT committed GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    out: dict[str, dict[str, int]] = {}
    for layer, status, n in rows:
        out.setdefault(str(layer), {})[str(status)] = int(n)
    return out


def compare_commits(con: Any, base: str, candidate: str, config: DiffConfig) -> Compared:
    """Compare the committed actions of every session of the staged tables ``b`` and ``c``."""
    repeats = [int(r[0]) for r in con.execute("SELECT DISTINCT rep FROM c ORDER BY 1").fetchall()] or [0]
    units: dict[str, Counter[str]] = {layer: Counter() for layer in LAYERS}
    mismatched: list[tuple[str, int, str]] = []
    for session_id, rep, layer, nb, _nc, same in con.execute(_LISTS).fetchall():
        if same:
            units[layer][session_id] += nb
        else:
            mismatched.append((session_id, int(rep), layer))
    found = Found("commit")
    try:
        # the mismatched groups a chunk at a time: their actions and divergences are in memory for one
        # chunk only, then written out (sdb.diff._found)
        mismatched.sort()
        for start in range(0, len(mismatched), CHUNK):
            divs, positions = _compare_chunk(con, base, candidate, config, mismatched[start : start + CHUNK])
            found.add(divs)
            for layer, session_id, n in positions:
                units[layer][session_id] += n
        states, state_units = states_by_commit(con, base, candidate)
        found.add(states)
    except BaseException:
        found.discard()
        raise
    for session_id, n in state_units.items():
        units["write"][session_id] += n
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
        found,
        units,
        repeats,
        attempts={"base": _attempts(con, "b"), "candidate": _attempts(con, "c")},
        parse_failures=int(failures),
        noise=noise,
    )


#: mismatched (session, repeat, layer) groups read and explained at a time
CHUNK = 20_000


def _compare_chunk(
    con: Any, base: str, candidate: str, config: DiffConfig, mismatched: Sequence[tuple[str, int, str]]
) -> tuple[list[Divergence], list[tuple[str, str, int]]]:
    """The divergences of some mismatched groups, and the positions compared per group."""
    con.register(
        "mm",
        pa.table(
            {
                "session_id": pa.array([m[0] for m in mismatched], pa.string()),
                "rep": pa.array([m[1] for m in mismatched], pa.int64()),
                "layer": pa.array([m[2] for m in mismatched], pa.string()),
            }
        ),
    )
    # the actions of the mismatched groups as whole columns (one Arrow conversion each), sliced per
    # group: Python never sees an equal group, and builds a dict only for an action that diverges
    base_groups = _groups(
        con, "SELECT b.* FROM b JOIN (SELECT DISTINCT session_id, layer FROM mm) USING (session_id, layer)", False
    )
    cand_groups = _groups(con, "SELECT c.* FROM c JOIN mm USING (session_id, rep, layer)", True)
    con.unregister("mm")
    work = [
        (session_id, rep, base_groups.get((session_id, 0, layer)), cand_groups.get((session_id, rep, layer)))
        for session_id, rep, layer in mismatched
    ]
    divergences, positions, pending = _sessions(work)
    _payloads(con, base, [b for _, b, _ in pending])
    _payloads(con, candidate, [c for _, _, c in pending])
    return divergences + explain(pending, config, True), positions


def _payloads(con: Any, run: str, rows: list[dict[str, Any]]) -> None:
    """Fetch the payloads of ``rows`` (only the pairs to explain need them) in one join."""
    if not rows:
        return
    con.register(
        "wanted",
        pa.table({"sid": [r["raw_sid"] for r in rows], "seq": pa.array([r["seq"] for r in rows], pa.int64())}),
    )
    found = {
        (sid, seq): payload
        for sid, seq, payload in con.execute(
            "SELECT e.session_id, e.seq, e.payload FROM events e JOIN wanted w ON e.session_id = w.sid "
            "AND e.seq = w.seq WHERE e.run_id = ?",
            [run],
        ).fetchall()
    }
    for r in rows:
        r["payload"] = found[(r["raw_sid"], r["seq"])]
    con.unregister("wanted")


Work = tuple[str, int, "Group | None", "Group | None"]


def _sessions(work: Sequence[Work]) -> tuple[list[Divergence], list[tuple[str, str, int]], Pending]:
    """:func:`_session` over many (session, repeat, layer) groups: the divergences, the positions
    compared per group, and the pairs left to explain."""
    found: list[Divergence] = []
    positions: list[tuple[str, str, int]] = []
    pending: Pending = []
    for session_id, rep, base, cand in work:
        divs, n = _session(session_id, rep, base, cand, pending)
        found += divs
        group = base or cand
        assert group is not None  # a mismatched group has actions on one side at least
        positions.append((group.cols["layer"][group.start], session_id, n))
    return found, positions, pending


@dataclass(frozen=True)
class Group:
    """The actions of one (session, repeat, layer) of one run, in seq order: rows ``start:end`` of
    ``cols`` (each column a Python list, converted from Arrow once for all groups)."""

    cols: dict[str, list[Any]]
    start: int
    end: int

    def column(self, name: str) -> list[Any]:
        return self.cols[name][self.start : self.end]

    def row(self, i: int) -> dict[str, Any]:
        """Action ``i`` of the group as the dict the classifier and the explainer read."""
        k = self.start + i
        return {name: values[k] for name, values in self.cols.items()}


def _groups(con: Any, sql: str, by_rep: bool) -> dict[tuple[str, int, str], Group]:
    table = con.sql(f"{sql} ORDER BY session_id, rep, layer, seq").to_arrow_table()
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    out: dict[tuple[str, int, str], Group] = {}
    sids, reps, layers = cols["session_id"], cols["rep"], cols["layer"]
    start = 0
    for i in range(1, len(sids) + 1):
        if i == len(sids) or (sids[i], reps[i], layers[i]) != (sids[start], reps[start], layers[start]):
            out[(sids[start], int(reps[start]) if by_rep else 0, layers[start])] = Group(cols, start, i)
            start = i
    return out


def _session(
    session_id: str, rep: int, base: Group | None, cand: Group | None, pending: Pending
) -> tuple[list[Divergence], int]:
    """One session's (repeat's, layer's) divergences by commit, and how many positions it compared."""
    empty: list[Any] = []
    b_ok, b_dig, b_name, b_status = (
        (base.column("committed"), base.column("digest"), base.column("name"), base.column("status"))
        if base
        else (empty, empty, empty, empty)
    )
    c_ok, c_dig, c_name, c_status = (
        (cand.column("committed"), cand.column("digest"), cand.column("name"), cand.column("status"))
        if cand
        else (empty, empty, empty, empty)
    )
    bi = [i for i, ok in enumerate(b_ok) if ok]
    ci = [i for i, ok in enumerate(c_ok) if ok]
    bd = [b_dig[i] for i in bi]
    cd = [c_dig[i] for i in ci]
    out: list[Divergence] = []

    def div(reason: str, b: dict[str, Any] | None, c: dict[str, Any] | None, at: int) -> Divergence:
        """A divergence at alignment position ``at`` (its order in the session)."""
        found = divergence(reason, b, c, session_id=session_id, rep=rep)
        found.order = at
        out.append(found)
        return found

    if reordered(bd, cd):
        assert base is not None and cand is not None
        for position, (x, y) in enumerate(zip(bi, ci, strict=True)):
            if b_dig[x] != c_dig[y]:
                div("reordered", base.row(x), cand.row(y), position)
        return out, len(bd)

    def refused(ok: list[bool], digests: list[int], statuses: list[str]) -> dict[int, int]:
        """Digest -> index of an uncommitted action a guard refused or validation rejected."""
        if all(ok):
            return {}
        return {digests[i]: i for i, s in enumerate(statuses) if not ok[i] and s in ("gated", "invalid")}

    # an unpaired commit whose twin on the other side was refused or invalid says why
    base_refused, cand_refused = refused(b_ok, b_dig, b_status), refused(c_ok, c_dig, c_status)
    pairs = align_by_name(bd, [b_name[i] for i in bi], cd, [c_name[i] for i in ci])
    for position, pair in enumerate(pairs):
        if pair.equal:
            continue
        b = base.row(bi[pair.base]) if base is not None and pair.base is not None else None
        c = cand.row(ci[pair.candidate]) if cand is not None and pair.candidate is not None else None
        if b is not None and c is None:
            c = _twin(b, cand, cand_refused)
            div("missing" if c is None else _refusal(c), b, c, position)
        elif c is not None and b is None:
            b = _twin(c, base, base_refused)
            div("extra" if b is None else _refusal(b), b, c, position)
        elif b is not None and c is not None:
            if b["name"] != c["name"]:
                div("tool_changed", b, c, position)
            else:
                pending.append((div("args_changed", b, c, position), b, c))
                out.pop()
    return out, len(pairs)


def _twin(row: dict[str, Any], other: Group | None, refused: dict[int, int]) -> dict[str, Any] | None:
    """The uncommitted action of the other side, refused or invalid, that an unpaired commit ``row``
    was the twin of (the same digest), if any."""
    twin = refused.get(row["digest"])
    return other.row(twin) if twin is not None and other is not None else None


def _refusal(row: dict[str, Any]) -> str:
    """Why the twin did not commit: a guard refused it, or it failed validation."""
    return "gate_changed" if row["status"] == "gated" else "invalid"


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
