"""Staging the two runs in DuckDB: each run's model actions as a temp table (``b`` for the base,
``c`` for the candidate) with its layer, repeat and committed flag, which both comparisons read.

The model's actions are ``action`` events whose parent is an ``llm`` event (the proposals that
crossed, or failed to cross, the boundary); in a run with no ``llm`` event at all (a tool-call log),
every action.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sdbctl.sdb.diff._config import DiffConfig
from sdbctl.sdb.diff._outcomes import REPEAT_SUFFIX
from sdbctl.sdb.store import RunManifest

# {llm} joins each action to the llm event it answers (dropped for a run with no llm events);
# committed: status ok and its effects succeeded, or the run records no effect for that action name
_ACTIONS = """
SELECT {sid} AS session_id, a.session_id AS raw_sid, coalesce(a.step, '') AS step, a.seq, a.name, a.digest,
       a.status, a.pattern, {rep} AS rep, coalesce(ly.layer, 'write') AS layer,
       (a.status = 'ok' AND coalesce(f.ok, a.name NOT IN (SELECT name FROM {effects}))) AS committed
FROM (SELECT session_id, seq, step, name, digest, status, pattern, parent FROM events
      WHERE run_id = $run AND kind = 'action' {parented}) a
{llm}
LEFT JOIN (SELECT session_id, parent, bool_and(status = 'ok') AS ok FROM events
           WHERE run_id = $run AND kind = 'effect' AND parent IS NOT NULL GROUP BY ALL) f
  ON f.session_id = a.session_id AND f.parent = a.seq
LEFT JOIN layers ly ON ly.name = a.name
"""
_LLM_JOIN = """JOIN (SELECT session_id, seq, payload FROM events WHERE run_id = $run AND kind = 'llm') l
  ON l.session_id = a.session_id AND l.seq = a.parent"""
# the repeat index lives in the llm payload of a step-mode replay with --repeat (parse it only there),
# and in the session id (ID#rK) of a session-mode replay with --repeat or an import of trials
_REPEAT = "coalesce(try_cast(json_extract(l.payload, '$.replay.repeat') AS BIGINT), 0)"
_SESSION_REPEAT = f"coalesce(try_cast(regexp_extract(a.session_id, '{REPEAT_SUFFIX}', 1) AS BIGINT), 0)"
_SESSION_ID = f"regexp_replace(a.session_id, '{REPEAT_SUFFIX}', '')"


def rows(con: Any, sql: str, params: list[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts."""
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def closed(manifest: RunManifest) -> bool:
    """The run ran the agent (a recording, an import or a session-mode replay), not teacher-forced."""
    return manifest.mode != "step"


def _declared_read(*manifests: RunManifest) -> list[str]:
    """The actions the runs' manifests declare read-only (``pure=True`` on a boundary action)."""
    out: list[str] = []
    for m in manifests:
        found = (m.meta.get("actions") or {}).get("read_only") if isinstance(m.meta.get("actions"), dict) else None
        out += [str(x) for x in found or []]
    return out


def _session_repeats(manifest: RunManifest) -> bool:
    """Sessions ``ID#rK`` of this run are repeat K of ``ID`` (a session-mode replay with --repeat, or
    an import of trials)."""
    return (manifest.repeat or 1) > 1 and manifest.mode != "step"


def stage(con: Any, config: DiffConfig, base: RunManifest, candidate: RunManifest, *, by_commit: bool) -> None:
    """Stage both runs: the layer of every action name (table ``layers``), then ``b`` and ``c``. By
    commit, a base of trials is its repeat 0; a step-mode replay keeps the session ids its source had."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT name FROM events WHERE run_id IN (?, ?) AND kind = 'action'",
            [base.run_id, candidate.run_id],
        ).fetchall()
    ]
    declared = _declared_read(base, candidate)
    con.register("layers", pa.table({"name": names, "layer": [config.layer(n, declared) for n in names]}))
    split = True if by_commit else _session_repeats(candidate)
    _load(con, "b", base, base_side=True, split_repeats=split)
    _load(con, "c", candidate, base_side=False)


def _load(con: Any, table: str, manifest: RunManifest, *, base_side: bool, split_repeats: bool | None = None) -> None:
    """Stage one run's model actions as temp table ``table`` (see :data:`_ACTIONS`). ``split_repeats``
    (the base side): whether ``ID#rK`` sessions are repeats, which holds only when the candidate's are
    too; a step-mode replay of a run of trials keeps their session ids as they are."""
    run = manifest.run_id
    found = con.execute("SELECT 1 FROM events WHERE run_id = ? AND kind = 'llm' LIMIT 1", [run]).fetchall()
    has_llm = bool(found)
    session_repeats = (
        _session_repeats(manifest) if split_repeats is None else split_repeats and _session_repeats(manifest)
    )
    step_repeats = (manifest.repeat or 1) > 1 and manifest.mode == "step" and has_llm and not base_side
    rep = _SESSION_REPEAT if session_repeats else _REPEAT if step_repeats else "0"
    con.execute(
        f"CREATE TEMP TABLE {table}_effects AS SELECT DISTINCT name FROM events WHERE run_id = ? AND kind = 'effect'",
        [run],
    )
    sql = _ACTIONS.format(
        sid=_SESSION_ID if session_repeats else "a.session_id",
        rep=rep,
        effects=f"{table}_effects",
        parented="AND parent IS NOT NULL" if has_llm else "",
        llm=_LLM_JOIN if has_llm else "",
    )
    if base_side and session_repeats:  # the base is its repeat 0
        sql = f"SELECT * FROM ({sql}) WHERE rep = 0"
    con.execute(f"CREATE TEMP TABLE {table} AS {sql}", {"run": run})


def provider_errors(con: Any, run: str) -> list[dict[str, Any]]:
    """The provider errors of ``run``, in order: their steps are reported apart, not compared."""
    return rows(
        con,
        "SELECT session_id, coalesce(step, '') AS step, seq, name, payload FROM events "
        "WHERE run_id = ? AND kind = 'error' AND name = 'provider' ORDER BY session_id, seq",
        [run],
    )
