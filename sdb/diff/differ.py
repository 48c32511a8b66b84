"""The differ: align each session of two runs, compare digests in DuckDB, explain mismatches with DeepDiff.

What is compared is the *model's* actions: ``action`` events whose parent is an ``llm`` event (the
proposals that crossed, or failed to cross, the boundary), grouped by (session, step) and, within a
group, aligned as sequences. A group is a *step*. DuckDB pairs the actions of both runs by their rank
in the group and flags the groups where any digest, status or count differs; only those groups come
to Python, where they are aligned, classified and explained. Candidate provider errors are reported
apart and their steps are not compared. States (``state_changed``) and guard verdicts
(``gate_changed``) are compared when the candidate ran the agent (a recording or a session-mode
replay); a step-mode replay evaluates no guards and enters no states.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from sdb.diff.align import align, reordered
from sdb.diff.config import DiffConfig
from sdb.diff.drift import drift_test
from sdb.diff.explain import field_changes_many
from sdb.events.schema import DIVERGENCE_SCHEMA
from sdb.store.layout import Store
from sdb.store.views import connect

REASONS = (
    "tool_changed",
    "args_changed",
    "missing",
    "extra",
    "reordered",
    "parse_failed",
    "invalid",
    "gate_changed",
    "state_changed",
)
_FAILED = ("parse_failed", "invalid")

_ACTIONS = """
SELECT {sid} AS session_id, a.session_id AS raw_sid, coalesce(a.step, '') AS step, a.seq, a.name, a.digest,
       a.status, a.pattern, {rep} AS rep
FROM (SELECT * FROM events WHERE run_id = ? AND kind = 'action' AND parent IS NOT NULL) a
JOIN (SELECT session_id, seq, payload FROM events WHERE run_id = ? AND kind = 'llm') l
  ON l.session_id = a.session_id AND l.seq = a.parent
"""
# the repeat index lives in the llm payload of a step-mode replay with --repeat (parse it only there),
# and in the session id (ID#rK) of a session-mode replay with --repeat
_REPEAT = "coalesce(try_cast(json_extract(l.payload, '$.replay.repeat') AS BIGINT), 0)"
_SESSION_REPEAT = "coalesce(try_cast(regexp_extract(a.session_id, '#r([0-9]+)$', 1) AS BIGINT), 0)"
_SESSION_ID = "regexp_replace(a.session_id, '#r[0-9]+$', '')"


@dataclass
class Divergence:
    session_id: str
    step: str | None
    repeat: int
    base_seq: int | None
    candidate_seq: int | None
    reason: str
    base_action: str | None
    candidate_action: str | None
    pattern: str | None
    fields: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "step": self.step,
            "repeat": self.repeat,
            "base_seq": self.base_seq,
            "candidate_seq": self.candidate_seq,
            "reason": self.reason,
            "action": {"base": self.base_action, "candidate": self.candidate_action},
            "pattern": self.pattern,
            "fields": self.fields,
        }


@dataclass
class DiffResult:
    base_run: str
    candidate_run: str
    summary: dict[str, Any]
    divergences: list[Divergence]
    errors: list[dict[str, Any]]
    session_rates: dict[str, float] = field(default_factory=dict)  # per session: share of steps diverged

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "divergences": [d.as_dict() for d in self.divergences], "errors": self.errors}


def _rows(con: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def diff_runs(
    store: Store,
    base: str,
    candidate: str,
    config: DiffConfig | None = None,
    *,
    save: bool = True,
    noise_run: str | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> DiffResult:
    """Compare ``candidate`` with ``base`` (see the module docstring). With ``noise_run`` (a self-replay
    of the base model) or a candidate replayed with repeats, the summary gets ``drift``: the noise
    floor, the candidate's divergence and the bootstrap interval of their difference."""
    config = config or DiffConfig()
    base = store.manifest(base).run_id  # an unknown run is a one-line error, not an empty side
    cand_manifest = store.manifest(candidate)
    candidate = cand_manifest.run_id
    closed_loop = cand_manifest.mode != "step"
    con = connect(store)
    repeated = (cand_manifest.repeat or 1) > 1
    session_repeats = repeated and cand_manifest.mode == "session"
    cand_rep = (_SESSION_REPEAT if session_repeats else _REPEAT) if repeated else "0"
    cand_sid = _SESSION_ID if session_repeats else "a.session_id"
    con.execute(f"CREATE TEMP TABLE b AS {_ACTIONS.format(rep='0', sid='a.session_id')}", [base, base])
    con.execute(f"CREATE TEMP TABLE c AS {_ACTIONS.format(rep=cand_rep, sid=cand_sid)}", [candidate, candidate])
    # candidate errors: reported apart; their steps are not compared
    errors = _rows(
        con,
        "SELECT session_id, coalesce(step, '') AS step, seq, name, payload FROM events "
        "WHERE run_id = ? AND kind = 'error' AND name = 'provider' ORDER BY session_id, seq",
        [candidate],
    )
    errored = {(e["session_id"], e["step"]) for e in errors}
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
    # steps per session, counted in DuckDB (a million-event run has hundreds of thousands of steps)
    per_session: Counter[str] = Counter(
        dict(
            con.execute(
                "SELECT session_id, count(*) FROM (SELECT DISTINCT session_id, step FROM b UNION "
                "SELECT DISTINCT session_id, step FROM c"
                + (
                    " UNION SELECT DISTINCT session_id, coalesce(step, '') FROM events WHERE run_id = '"
                    + base
                    + "' AND kind = 'state' AND name NOT LIKE 'replay:%'"
                    if closed_loop
                    else ""
                )
                + ") GROUP BY 1"
            ).fetchall()
        )
    )
    base_rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    cand_rows: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    if groups:
        keys = pa.table(
            {"session_id": [g[0] for g in groups], "step": [g[1] for g in groups], "rep": [g[2] for g in groups]}
        )
        con.register("g", keys)
        for row in _rows(
            con,
            "SELECT b.*, e.payload FROM b JOIN (SELECT DISTINCT session_id, step FROM g) USING (session_id, step) "
            "JOIN events e ON e.run_id = '" + base + "' AND e.session_id = b.raw_sid AND e.seq = b.seq "
            "ORDER BY session_id, step, seq",
            [],
        ):
            base_rows[(row["session_id"], row["step"])].append(row)
        for row in _rows(
            con,
            "SELECT c.*, e.payload FROM c JOIN g USING (session_id, step, rep) JOIN events e ON e.run_id = '"
            + candidate
            + "' AND e.session_id = c.raw_sid AND e.seq = c.seq ORDER BY session_id, step, seq",
            [],
        ):
            cand_rows[(row["session_id"], row["step"], row["rep"])].append(row)
    divergences: list[Divergence] = []
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]] = []
    for session_id, step, rep in sorted(groups):
        if (session_id, step) in errored:
            continue
        divergences += _classify(
            session_id,
            step,
            rep,
            base_rows[(session_id, step)],
            cand_rows[(session_id, step, rep)],
            config,
            closed_loop,
            pending,
        )
    divergences += _explain(pending, config, closed_loop)
    if closed_loop:
        divergences += _states(con, base, candidate)
    divergences.sort(key=lambda d: (d.session_id, d.step or "", d.repeat, _seq(d.base_seq), _seq(d.candidate_seq)))
    for session_id, _step in errored:
        per_session[session_id] -= 1
    compared = +per_session  # steps compared per session (errored steps left out)
    summary = _summary(divergences, compared, repeats, errors, con, base, candidate)
    cand_rates = _session_rates(divergences, compared, len(repeats))
    noise_rates: dict[str, float] | None = None
    source = None
    if noise_run is not None:
        noise = diff_runs(store, base, noise_run, config, save=False)
        noise_rates = _session_rates(noise.divergences, compared, 1)
        source = f"self-replay {noise.candidate_run}"
    elif len(repeats) > 1:
        noise_rates = _repeat_disagreement(con, compared)
        source = f"{len(repeats)} repeats of the candidate"
    if noise_rates is not None:
        sessions = sorted(set(cand_rates) & set(noise_rates))
        if sessions:
            drift = drift_test(
                [cand_rates[x] for x in sessions],
                [noise_rates[x] for x in sessions],
                source=source or "noise",
                resamples=resamples,
                seed=seed,
            )
            summary["drift"] = drift.as_dict()
    result = DiffResult(
        base,
        candidate,
        summary,
        divergences,
        [
            {
                "session_id": e["session_id"],
                "step": e["step"] or None,
                "seq": e["seq"],
                "message": orjson.loads(e["payload"]).get("message"),
            }
            for e in errors
        ],
    )
    result.session_rates = cand_rates
    if save:
        save_divergences(store, result)
    return result


def _classify(
    session_id: str,
    step: str,
    rep: int,
    base: list[dict[str, Any]],
    cand: list[dict[str, Any]],
    config: DiffConfig,
    closed_loop: bool,
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]],
) -> list[Divergence]:
    """Classify one mismatched step. Same-action pairs whose digests differ go to ``pending``, to be
    explained by DeepDiff in one batch per action (see :func:`_explain`)."""
    out: list[Divergence] = []

    def div(
        reason: str, b: dict[str, Any] | None, c: dict[str, Any] | None, fields: list[dict[str, Any]] | None = None
    ) -> None:
        out.append(
            Divergence(
                session_id,
                step or None,
                rep,
                b["seq"] if b else None,
                c["seq"] if c else None,
                reason,
                b["name"] if b else None,
                c["name"] if c else None,
                (c or b or {}).get("pattern"),
                fields or [],
            )
        )

    bd = [int(r["digest"]) for r in base]
    cd = [int(r["digest"]) for r in cand]
    if reordered(bd, cd) and all(r["status"] == "ok" for r in cand):
        for bb, cc in zip(base, cand, strict=True):
            if bb["digest"] != cc["digest"]:
                div("reordered", bb, cc)
        return out
    for pair in align(bd, cd):
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


def _seq(seq: int | None) -> int:
    return -1 if seq is None else seq


def _explain(
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]], config: DiffConfig, closed_loop: bool
) -> list[Divergence]:
    """DeepDiff on the pending same-action pairs, one call per action (its tolerance): ``args_changed``
    with the field paths, or nothing when the tolerances absorb the difference (or ``gate_changed``
    when only the guard's verdict moved)."""
    by_action: dict[str, list[tuple[Divergence, dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for item in pending:
        by_action[item[2]["name"]].append(item)
    out: list[Divergence] = []
    for action, items in by_action.items():
        pairs = [
            (orjson.loads(b["payload"]).get("args") or {}, orjson.loads(c["payload"]).get("args") or {})
            for _, b, c in items
        ]
        for (div, b, c), fields in zip(items, field_changes_many(pairs, config.tolerance(action)), strict=True):
            if fields:
                div.fields = fields
                out.append(div)
            elif closed_loop and b["status"] != c["status"]:
                div.reason = "gate_changed"
                out.append(div)
    return out


def _states(con: Any, base: str, candidate: str) -> list[Divergence]:
    """``state_changed``: per (session, step), the states entered differ (repeat 0 of a session-mode
    replay with repeats: sessions ``ID#rK`` are its other repeats, compared on actions only)."""
    rows = con.execute(
        """
        WITH s AS (SELECT run_id, session_id, coalesce(step, '') AS step, list(name ORDER BY seq) AS names,
                          min(seq) AS seq, any_value(pattern) AS pattern
                   FROM events WHERE run_id IN (?, ?) AND kind = 'state' AND name NOT LIKE 'replay:%'
                   GROUP BY ALL)
        SELECT coalesce(b.session_id, c.session_id), coalesce(b.step, c.step), b.seq, c.seq, b.names, c.names,
               coalesce(c.pattern, b.pattern)
        FROM (SELECT * FROM s WHERE run_id = ?) b FULL OUTER JOIN
             (SELECT * FROM s WHERE run_id = ? AND NOT regexp_matches(session_id, '#r[0-9]+$')) c
             USING (session_id, step)
        WHERE b.names IS DISTINCT FROM c.names
          AND coalesce(b.session_id, c.session_id) IN (SELECT DISTINCT session_id FROM events WHERE run_id = ?)
    """,
        [base, candidate, base, candidate, candidate],
    ).fetchall()
    out = []
    for session_id, step, bseq, cseq, bnames, cnames, pattern in rows:
        out.append(
            Divergence(
                session_id,
                step or None,
                0,
                bseq,
                cseq,
                "state_changed",
                ",".join(bnames or []) or None,
                ",".join(cnames or []) or None,
                pattern,
                [{"path": "states", "old": bnames, "new": cnames}],
            )
        )
    return out


def _summary(
    divs: list[Divergence],
    compared: Counter[str],
    repeats: list[int],
    errors: list[dict[str, Any]],
    con: Any,
    base: str,
    candidate: str,
) -> dict[str, Any]:
    k = max(1, len(repeats))
    steps_compared = sum(compared.values()) * k
    diverged_steps = {(d.session_id, d.step or "", d.repeat) for d in divs}
    sessions = set(compared)
    diverged_sessions = {d.session_id for d in divs}
    first: dict[str, dict[str, Any]] = {}
    for d in sorted(divs, key=lambda d: (d.session_id, d.base_seq if d.base_seq is not None else 10**12)):
        first.setdefault(
            d.session_id,
            {
                "step": d.step,
                "reason": d.reason,
                "base_seq": d.base_seq,
                "candidate_seq": d.candidate_seq,
                "action": d.candidate_action or d.base_action,
            },
        )
    terminal = con.execute(
        """
        WITH t AS (SELECT run_id, session_id, arg_max(name, seq) AS last FROM events
                   WHERE run_id IN (?, ?) AND kind = 'state' AND name NOT LIKE 'replay:%' GROUP BY ALL)
        SELECT b.session_id, b.last, c.last FROM (SELECT * FROM t WHERE run_id = ?) b
        JOIN (SELECT * FROM t WHERE run_id = ? AND NOT regexp_matches(session_id, '#r[0-9]+$')) c USING (session_id)
        WHERE b.last <> c.last ORDER BY 1
    """,
        [base, candidate, base, candidate],
    ).fetchall()
    per_session_ok: dict[str, list[bool]] = defaultdict(list)
    if k > 1:
        for s in sessions:
            for r in repeats:
                per_session_ok[s].append(not any(d.session_id == s and d.repeat == r for d in divs))
    return {
        "base_run": base,
        "candidate_run": candidate,
        "repeats": k,
        "steps_compared": steps_compared,
        "steps_diverged": len(diverged_steps),
        "step_divergence_rate": len(diverged_steps) / steps_compared if steps_compared else 0.0,
        "sessions_compared": len(sessions),
        "session_ids": sorted(sessions),
        "sessions_diverged": len(diverged_sessions & sessions) if sessions else len(diverged_sessions),
        "session_divergence_rate": len(diverged_sessions & sessions) / len(sessions) if sessions else 0.0,
        "divergences": len(divs),
        "errors": len(errors),
        "by_reason": dict(sorted(Counter(d.reason for d in divs).items())),
        "by_action": dict(sorted(Counter(d.candidate_action or d.base_action or "?" for d in divs).items())),
        "by_pattern": dict(sorted(Counter(d.pattern or "" for d in divs).items())),
        "first_divergence": first,
        "terminal_changes": [{"session_id": s, "base": b, "candidate": c} for s, b, c in terminal],
        "pass_k": (sum(all(v) for v in per_session_ok.values()) / len(per_session_ok)) if per_session_ok else None,
    }


def _session_rates(divs: list[Divergence], steps: Counter[str], repeats: int) -> dict[str, float]:
    """Per session: the share of its (step, repeat) pairs with at least one divergence."""
    diverged: Counter[str] = Counter()
    for s, _step, _rep in {(d.session_id, d.step or "", d.repeat) for d in divs}:
        diverged[s] += 1
    return {s: diverged[s] / (n * repeats) for s, n in steps.items()}


def _repeat_disagreement(con: Any, compared: Counter[str]) -> dict[str, float]:
    """The noise floor from repeats: per session, the share of (step, repeat >= 1) whose actions differ
    from repeat 0's."""
    rows = con.execute("""
        WITH g AS (SELECT session_id, step, rep, list(digest ORDER BY seq) AS ds FROM c GROUP BY ALL)
        SELECT g.session_id, avg(CASE WHEN g.ds IS DISTINCT FROM z.ds THEN 1.0 ELSE 0.0 END)
        FROM g JOIN (SELECT * FROM g WHERE rep = 0) z USING (session_id, step)
        WHERE g.rep > 0 GROUP BY 1
    """).fetchall()
    return {s: float(r) for s, r in rows}


def save_divergences(store: Store, result: DiffResult) -> None:
    """Write the divergences as ``diffs/<base>..<candidate>/divergences.parquet`` (the ``divergences`` view)."""
    folder = store.diff_dir(result.base_run, result.candidate_run)
    store.loc.make_dir(folder)
    rows = [
        {
            **{k: v for k, v in d.__dict__.items() if k != "fields"},
            "fields": json.dumps(d.fields, default=str),
            "base_run": result.base_run,
            "candidate_run": result.candidate_run,
        }
        for d in result.divergences
    ]
    table = pa.Table.from_pylist(rows, schema=DIVERGENCE_SCHEMA) if rows else DIVERGENCE_SCHEMA.empty_table()
    store.loc.write_parquet(table, f"{folder}/divergences.parquet")
    store.loc.write_bytes(f"{folder}/summary.json", (json.dumps(result.summary, indent=2, default=str) + "\n").encode())


__all__ = ["REASONS", "DiffResult", "Divergence", "diff_runs"]
