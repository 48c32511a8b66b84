"""Staging the two runs in DuckDB: each run's model actions as a temp table (``b`` for the base,
``c`` for the candidate) with its layer, repeat and committed flag, which both comparisons read.

The model's actions are ``action`` events whose parent is an ``llm`` event (the proposals that
crossed, or failed to cross, the boundary); in a run with no ``llm`` event at all (a tool-call log),
every action.

What a run is (teacher-forced or not, with trials or not) is read from its events
(:func:`shape`), never from its manifest: a manifest travels with the store, and its ``mode`` or
``repeat`` would otherwise choose the comparison. A manifest that contradicts its events is shown
(:func:`mode_claims`), not obeyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sdbctl.sdb.diff._config import DiffConfig, Rule
from sdbctl.sdb.diff._noise import listed, repeat_models
from sdbctl.sdb.diff._outcomes import REPEAT_SUFFIX
from sdbctl.sdb.errors import SchemaError
from sdbctl.sdb.events import MAX_REPEAT
from sdbctl.sdb.store import RunManifest

# {llm} joins each action to the llm event it answers (dropped for a run with no llm events);
# committed, from the action's own session only: status ok and every effect of it succeeded (a handler's
# error is a failed effect); with none recorded, unless its session records effects of that action name
# elsewhere (then it did not run) or the config says the action needs one (table needs_effect)
_ACTIONS = """
SELECT {sid} AS session_id, a.session_id AS raw_sid, coalesce(a.step, '') AS step, a.seq, a.name, a.digest,
       a.status, a.pattern, {rep} AS rep, coalesce(ly.layer, 'write') AS layer,
       (a.status = 'ok' AND coalesce(f.ok, se.name IS NULL AND a.name NOT IN (SELECT name FROM needs_effect)))
         AS committed
FROM {actions} a
{llm}
LEFT JOIN (SELECT session_id, parent, bool_and(kind = 'effect' AND status = 'ok') AS ok FROM {effects}
           WHERE parent IS NOT NULL GROUP BY ALL) f
  ON f.session_id = a.session_id AND f.parent = a.seq
LEFT JOIN (SELECT DISTINCT session_id, name FROM {effects} WHERE kind = 'effect') se
  ON se.session_id = a.session_id AND se.name = a.name
LEFT JOIN layers ly ON ly.name = a.name
"""
# (the llm event's repeat is taken from its mark inside the subquery: the join then holds a number
# per llm event)
_LLM_JOIN = """JOIN (SELECT session_id, seq, {repeat} AS rep FROM marks WHERE run_id = $run AND kind = 'llm') l
  ON l.session_id = a.session_id AND l.seq = a.parent"""
# the repeat index lives in the replay mark of a step-mode replay's llm event with --repeat (table marks),
# and in the session id (ID#rK) of a session-mode replay with --repeat or an import of trials
_REPEAT = "coalesce(try_cast(repeat AS BIGINT), 0)"
_SESSION_REPEAT = f"coalesce(try_cast(regexp_extract(a.session_id, '{REPEAT_SUFFIX}', 1) AS BIGINT), 0)"
_SESSION_ID = f"regexp_replace(a.session_id, '{REPEAT_SUFFIX}', '')"


def rows(con: Any, sql: str, params: list[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts."""
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# The replay mark of each llm (and provider error) event, its column ``replay`` (the same JSON as its
# payload's `$.replay`; the column decides, should a damaged part's two disagree): a step-mode replay's
# the source step it answered (`source_seq`) and its repeat (`repeat`), a session-mode replay's whether
# the answer came from a cache (`cached`). Read once per run into temp table `marks`, from the column:
# the payloads are most of a run's bytes, and decompressing them for the marks cost the load test's
# diff 2.7 s. The same scan keeps each error's step and name; a provider error's payload
# (:func:`provider_errors`) is read by a second scan, of the provider errors only, when there are any.
_MARKS = """INSERT INTO marks
SELECT run_id, session_id, seq, kind, m[1], coalesce(m[2] IS NOT NULL, false), m[3], step, name, NULL FROM (
    SELECT run_id, session_id, seq, kind,
           CASE WHEN kind = 'error' THEN step END AS step, CASE WHEN kind = 'error' THEN name END AS name,
           json_extract(replay, ['$.repeat', '$.source_seq', '$.cached']) AS m
    FROM events WHERE run_id IN ({runs}) AND kind IN ('llm', 'error'))"""
_PROVIDER_PAYLOADS = """UPDATE marks SET error = e.payload
FROM (SELECT run_id, session_id, seq, payload FROM events
      WHERE run_id IN ({runs}) AND kind = 'error' AND name = 'provider') e
WHERE marks.run_id = e.run_id AND marks.session_id = e.session_id AND marks.seq = e.seq"""
_HAS_PROVIDER_ERRORS = "SELECT 1 FROM marks WHERE run_id IN ({runs}) AND kind = 'error' AND name = 'provider' LIMIT 1"
_MARKS_TABLE = """CREATE TEMP TABLE IF NOT EXISTS marks
    (run_id VARCHAR, session_id VARCHAR, seq BIGINT, kind VARCHAR, repeat JSON, forced BOOLEAN, cached JSON,
     step VARCHAR, name VARCHAR, error VARCHAR);
    CREATE TEMP TABLE IF NOT EXISTS sessions (run_id VARCHAR, session_id VARCHAR);
    CREATE TEMP TABLE IF NOT EXISTS marked (run_id VARCHAR)"""
# each run's session ids, read once beside the marks (asked for by several checks)
_SESSIONS = "INSERT INTO sessions SELECT DISTINCT run_id, session_id FROM events WHERE run_id IN ({runs})"
# Every marked event of a run must say the same: one event marked otherwise would choose the
# comparison of the whole run (a damaged run)
_MODES = """SELECT count(*) FILTER (WHERE forced), count(*) FILTER (WHERE NOT forced),
             min(session_id) FILTER (WHERE forced), min(session_id) FILTER (WHERE NOT forced),
             count(*) FILTER (WHERE kind = 'llm') FROM marks WHERE run_id = ?"""
# a repeat index an event holds (its llm or error event's mark, its session id's ID#rK) that no replay
# writes: 0 <= K < MAX_REPEAT, a whole number
_BAD_STEP_REPEAT = """SELECT session_id, repeat FROM marks WHERE run_id = $run AND repeat IS NOT NULL
    AND NOT coalesce(json_type(repeat) IN ('BIGINT', 'UBIGINT') AND try_cast(repeat AS BIGINT) BETWEEN 0 AND $top,
                     false)
    LIMIT 1"""
_BAD_SESSION_REPEAT = f"""SELECT session_id FROM (SELECT session_id FROM sessions WHERE run_id = $run)
    WHERE regexp_matches(session_id, '{REPEAT_SUFFIX}')
    AND NOT coalesce(try_cast(regexp_extract(session_id, '{REPEAT_SUFFIX}', 1) AS BIGINT) <= $top, false) LIMIT 1"""
_EVENT_REPEAT = f"coalesce(try_cast(regexp_extract(session_id, '{REPEAT_SUFFIX}', 1) AS BIGINT), 0)"
_TRIALS = f"""SELECT 1 FROM (SELECT session_id FROM sessions WHERE run_id = ?)
              WHERE try_cast(regexp_extract(session_id, '{REPEAT_SUFFIX}', 1) AS BIGINT) > 0 LIMIT 1"""


@dataclass(frozen=True)
class Shape:
    """What a run is, as its events say, whatever its manifest claims: the comparison, the repeats and
    the outcomes follow from these, so a manifest's ``mode`` or ``repeat`` changes no verdict."""

    run_id: str
    forced: bool  #: teacher-forced (a step-mode replay): its llm or error events carry ``$.replay.source_seq``
    trials: bool  #: ran the agent, with sessions ``ID#rK`` (K >= 1): repeat K of ``ID``
    has_llm: bool  #: has llm events (else a tool-call log: every action is the model's)

    @property
    def closed(self) -> bool:
        """The run ran the agent (a recording, an import or a session-mode replay), not teacher-forced."""
        return not self.forced


def shape(con: Any, run: str) -> Shape:
    """The :class:`Shape` of ``run``, read from its events; a :class:`SchemaError` naming ``run`` when
    its events contradict each other on what it is (its mode, its repeats): the run is damaged."""
    mark(con, run)
    marked, unmarked, one, other, llm = con.execute(_MODES, [run]).fetchone()
    if marked and unmarked:
        raise SchemaError(
            f"run {run!r} is damaged: it holds events of both a step-mode and a session-mode replay: {marked} "
            f"llm or error event(s) (e.g. of session {one!r}) carry $.replay.source_seq, {unmarked} (e.g. of "
            f"session {other!r}) do not"
        )
    forced = bool(marked)
    trials = not forced and bool(con.execute(_TRIALS, [run]).fetchall())
    _check_repeats(con, run, trials)
    return Shape(run, forced, trials, bool(llm))


def mark(con: Any, *runs: str) -> None:
    """Read the replay marks of ``runs``' llm and error events into temp table ``marks`` (see
    :data:`_MARKS`) and their session ids into ``sessions``, in one scan each (and a provider error's
    payload, in one more where there are provider errors); a run already read is not read again."""
    con.execute(_MARKS_TABLE)
    known = {r[0] for r in con.execute("SELECT run_id FROM marked").fetchall()}
    new = [r for r in dict.fromkeys(runs) if r not in known]
    if new:
        runs_sql = ", ".join("?" * len(new))
        con.execute(_MARKS.format(runs=runs_sql), new)
        if con.execute(_HAS_PROVIDER_ERRORS.format(runs=runs_sql), new).fetchall():
            con.execute(_PROVIDER_PAYLOADS.format(runs=runs_sql), new)
        con.execute(_SESSIONS.format(runs=runs_sql), new)
        con.executemany("INSERT INTO marked VALUES (?)", [[r] for r in new])


def _check_repeats(con: Any, run: str, trials: bool) -> None:
    """Refuse repeat indexes no replay writes, and repeats (sessions ``ID#rK``) of one run that share no
    model with its first repeat: planted repeats (another run's sessions) would dilute a drift or
    inflate a rate. Sharing, not equal sets: an imported trial may have one answer of another model."""

    params = {"run": run, "top": MAX_REPEAT - 1}
    found = con.execute(_BAD_STEP_REPEAT, params).fetchone()
    if found is not None:
        raise SchemaError(
            f"run {run!r} is damaged: an llm or error event of session {found[0]!r} holds repeat index "
            f"{str(found[1])[:40]!r} (a replay writes whole numbers 0 to {MAX_REPEAT - 1})"
        )
    if not trials:
        return
    found = con.execute(_BAD_SESSION_REPEAT, params).fetchone()
    if found is not None:
        raise SchemaError(
            f"run {run!r} is damaged: session {found[0]!r} has a repeat index out of range "
            f"(a replay writes repeats 0 to {MAX_REPEAT - 1})"
        )
    models = repeat_models(con, run, _EVENT_REPEAT)
    first = min(models)
    for rep, named in sorted(models.items()):
        if named != models[first] and not set(named) & set(models[first]):
            raise SchemaError(
                f"run {run!r} is damaged: its repeat {rep} (sessions ID#r{rep}) names model "
                f"{listed(named)}, its repeat {first} {listed(models[first])}: the repeats of one run ask "
                "the same model"
            )


def mode_claims(manifest: RunManifest, found: Shape) -> list[Rule]:
    """The manifest's ``mode`` when it contradicts the events (shown, not obeyed)."""
    if (manifest.mode == "step") == found.forced:
        return []
    said = "a step-mode replay" if found.forced else "a closed-loop run"
    return [Rule("mode", (str(manifest.mode),), f"manifest of run {manifest.run_id!r}; its events say {said}", False)]


# both runs' events the staging reads, in one scan of the store for both (a scan of a run of thousands
# of parts costs most of a second, whichever of the runs it keeps): the model's actions (answering an llm
# event, or every action of a run with none), and the effects and errors (the states stay out: with them
# the load test's diff peaked ~70 MB higher, for half a second)
_STAGED = """CREATE TEMP TABLE staged AS
SELECT run_id, kind, session_id, seq, step, name, digest, status, pattern, parent FROM events
WHERE run_id IN ($base, $candidate)
  AND (kind IN ('effect', 'error') OR kind = 'action'
       AND (parent IS NOT NULL OR run_id = $base AND $base_every OR run_id = $candidate AND $candidate_every))"""


def read_runs(con: Any, base: Shape, candidate: Shape) -> None:
    """Read both runs' actions, effects and errors into temp table ``staged`` (see :data:`_STAGED`), which
    the workload check and the staging read instead of the store; a no-op once read. :func:`stage`
    drops it once ``b`` and ``c`` hold what the comparison needs."""
    if con.execute("SELECT 1 FROM duckdb_tables() WHERE temporary AND table_name = 'staged'").fetchall():
        return
    con.execute(
        _STAGED,
        {
            "base": base.run_id,
            "candidate": candidate.run_id,
            "base_every": not base.has_llm,
            "candidate_every": not candidate.has_llm,
        },
    )


def stage(con: Any, config: DiffConfig, base: Shape, candidate: Shape, *, by_commit: bool) -> None:
    """Stage both runs: the layer of every action name (table ``layers``), then ``b`` and ``c``. By
    commit, a base of trials is its repeat 0; a step-mode replay keeps the session ids its source had."""
    read_runs(con, base, candidate)  # each run's events read once (a no-op when already read)
    names = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT name FROM staged WHERE run_id IN (?, ?) AND kind = 'action'",
            [base.run_id, candidate.run_id],
        ).fetchall()
    ]
    con.register("layers", pa.table({"name": names, "layer": [config.layer(n) for n in names]}))
    con.register("needs_effect", pa.table({"name": pa.array([n for n in names if config.needs(n)], pa.string())}))
    split = by_commit or candidate.trials
    _load(con, "b", base, base_side=True, split_repeats=split)
    _load(con, "c", candidate, base_side=False)
    con.execute("DROP TABLE staged")


def _load(con: Any, table: str, found: Shape, *, base_side: bool, split_repeats: bool | None = None) -> None:
    """Stage one run's model actions as temp table ``table`` (see :data:`_ACTIONS`). ``split_repeats``
    (the base side): whether ``ID#rK`` sessions are repeats, which holds only when the candidate's are
    too; a step-mode replay of a run of trials keeps their session ids as they are."""
    run, has_llm = found.run_id, found.has_llm
    session_repeats = found.trials if split_repeats is None else split_repeats and found.trials
    step_repeats = found.forced and has_llm and not base_side
    rep = _SESSION_REPEAT if session_repeats else "l.rep" if step_repeats else "0"
    sql = _ACTIONS.format(
        sid=_SESSION_ID if session_repeats else "a.session_id",
        rep=rep,
        actions="(SELECT * FROM staged WHERE run_id = $run AND kind = 'action')",
        effects="(SELECT * FROM staged WHERE run_id = $run AND kind IN ('effect', 'error'))",
        llm=_LLM_JOIN.format(repeat=_REPEAT if step_repeats else "0") if has_llm else "",
    )
    if base_side and session_repeats:  # the base is its repeat 0
        sql = f"SELECT * FROM ({sql}) WHERE rep = 0"
    con.execute(f"CREATE TEMP TABLE {table} AS {sql}", {"run": run})


def model_action_names(con: Any, found: Shape, *, staged: bool = False) -> list[str]:
    """The names of the run's model actions (as :data:`_ACTIONS` takes them) that the boundary knew: a
    name it refused (``invalid``, or a reply it could not parse) is the model's error, in any workload.
    ``staged``: read where :func:`read_runs` staged the run's actions, not in the store."""
    parented = "AND parent IS NOT NULL" if found.has_llm else ""
    mark(con, found.run_id)
    llm = _LLM_JOIN.format(repeat="0") if found.has_llm else ""
    actions = f"(SELECT * FROM {'staged' if staged else 'events'} WHERE run_id = $run AND kind = 'action' {parented})"
    sql = (
        f"SELECT DISTINCT a.name FROM (SELECT session_id, seq, name, parent, status FROM {actions}) a {llm} "
        "WHERE coalesce(a.status, '') NOT IN ('invalid', 'parse_failed') ORDER BY 1"
    )
    return [r[0] for r in con.execute(sql, {"run": found.run_id}).fetchall()]


def provider_errors(con: Any, run: str) -> list[dict[str, Any]]:
    """The provider errors of ``run``, in order: their steps are reported apart, not compared. Read
    with the marks (:func:`mark`)."""
    mark(con, run)
    return rows(
        con,
        "SELECT session_id, coalesce(step, '') AS step, seq, name, error AS payload FROM marks "
        "WHERE run_id = ? AND kind = 'error' AND name = 'provider' ORDER BY session_id, seq",
        [run],
    )
