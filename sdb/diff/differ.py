"""The differ: align each session of two runs, compare digests in DuckDB, explain mismatches with DeepDiff.

What is compared is the *model's* actions: ``action`` events whose parent is an ``llm`` event (the
proposals that crossed, or failed to cross, the boundary); in a run with no ``llm`` event at all (a
tool-call log), every action. Each action has a *layer* (``write``, ``read``, ``speech``; see
:class:`sdb.diff.config.DiffConfig`). What is compared depends on what happened, as the boundary's
contract says:

- **By commit** (both runs ran the agent: recordings, imports, session-mode replays): per session and
  layer, the sequence of *committed* actions (status ok, and an effect that succeeded, or no effect
  recorded for any action of that name in the run), aligned over the whole session
  (:func:`sdb.diff.commits.compare_commits`). Failed, refused and invalid attempts are counted apart.
- **By step** (a step-mode replay: teacher-forced, so step k of both runs answered the same
  question): actions are grouped by (session, step); DuckDB pairs both runs' actions by rank in the
  group and flags the groups where a digest, status or count differs; only those come to Python,
  where they are aligned, classified and explained. Candidate provider errors are reported apart and
  their steps are not compared. When the candidate ran the agent (``--align step`` on two closed-loop
  runs), states (``state_changed``) and guard verdicts (``gate_changed``) are compared too.

Speech is compared by similarity (:mod:`sdb.diff.speech`). The headline rates, the noise floor and the
gate count the configured layers (default ``write``); every divergence carries its layer, and the
summary has each layer's figures under ``by_layer``.
"""

from __future__ import annotations

import gc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from sdbctl.sdb.diff.align import align, reordered
from sdbctl.sdb.diff.config import LAYERS, DiffConfig
from sdbctl.sdb.diff.drift import drift_test
from sdbctl.sdb.diff.explain import field_changes_many
from sdbctl.sdb.diff.outcomes import REPEAT_SUFFIX, OutcomeConfig, compare_outcomes, session_outcomes
from sdbctl.sdb.diff.speech import similarity
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events.schema import DIVERGENCE_SCHEMA
from sdbctl.sdb.store.layout import Store
from sdbctl.sdb.store.manifest import RunManifest
from sdbctl.sdb.store.views import connect

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
    "speech_changed",
)
ALIGNMENTS = ("auto", "session", "step")
_FAILED = ("parse_failed", "invalid")

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


@dataclass(kw_only=True)
class Divergence:
    """One place where the candidate's actions differ from the base's: where, expected, found, why."""

    session_id: str  #: the session (repeat suffix removed)
    step: str | None  #: the step key of the action (base side where both have one)
    repeat: int  #: the candidate's repeat index (0 without repeats)
    base_seq: int | None  #: seq of the base's action (None: the base has none here)
    candidate_seq: int | None  #: seq of the candidate's action (None: the candidate has none here)
    reason: str  #: one of :data:`REASONS`
    base_action: str | None  #: action name on the base side (for state_changed: the states entered)
    candidate_action: str | None  #: action name on the candidate side
    pattern: str | None  #: the runtime pattern that emitted it
    fields: list[dict[str, Any]] = field(default_factory=list)  #: args_changed: ``{path, old, new}`` each
    layer: str = "write"  #: the action's class: write, read or speech
    similarity: float | None = None  #: speech: the texts' similarity in [0, 1]
    after_first: bool = False  #: not the first divergence of its session, repeat and layer
    order: int = field(default=0, repr=False, compare=False)  #: its place in the session's alignment (sorting)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "step": self.step,
            "repeat": self.repeat,
            "base_seq": self.base_seq,
            "candidate_seq": self.candidate_seq,
            "reason": self.reason,
            "layer": self.layer,
            "action": {"base": self.base_action, "candidate": self.candidate_action},
            "pattern": self.pattern,
            "fields": self.fields,
            "similarity": self.similarity,
            "after_first": self.after_first,
        }


@dataclass
class DiffResult:
    base_run: str
    candidate_run: str
    summary: dict[str, Any]
    divergences: list[Divergence]
    errors: list[dict[str, Any]]
    session_rates: dict[str, float] = field(default_factory=dict)  # per session: share of units diverged

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "divergences": [d.as_dict() for d in self.divergences], "errors": self.errors}


def _rows(con: Any, sql: str, params: list[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts."""
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _closed(manifest: RunManifest) -> bool:
    """The run ran the agent (a recording, an import or a session-mode replay), not teacher-forced."""
    return manifest.mode != "step"


def _declared_read(*manifests: RunManifest) -> list[str]:
    out: list[str] = []
    for m in manifests:
        found = (m.meta.get("actions") or {}).get("read_only") if isinstance(m.meta.get("actions"), dict) else None
        out += [str(x) for x in found or []]
    return out


def _success_states(config: OutcomeConfig, *manifests: RunManifest) -> tuple[str, ...] | None:
    if config.success is not None:
        return config.success
    for m in manifests:
        found = (m.meta.get("outcome") or {}).get("success") if isinstance(m.meta.get("outcome"), dict) else None
        if found:
            return tuple(str(x) for x in found)
    return None


def refuse_partial(*manifests: RunManifest) -> None:
    """A verdict on half a run is refused: one line naming the partial run and what to do."""
    for m in manifests:
        if m.status == "partial":
            hint = (
                f"complete it with `sdbctl replay --resume {m.run_id}`"
                if m.source_run and m.mode in ("step", "session")
                else "record it again"
            )
            raise SdbError(
                f"run {m.run_id!r} is partial ({m.interrupted or 'its writer did not finish'}): "
                f"no verdict on half a run; {hint}, or pass --allow-partial"
            )


def _session_repeats(manifest: RunManifest) -> bool:
    """Sessions ``ID#rK`` of this run are repeat K of ``ID`` (a session-mode replay with --repeat, or
    an import of trials)."""
    return (manifest.repeat or 1) > 1 and manifest.mode != "step"


def _load(
    con: Any, table: str, run: str, manifest: RunManifest, *, base_side: bool, split_repeats: bool | None = None
) -> None:
    """Stage one run's model actions as temp table ``table`` (see :data:`_ACTIONS`). ``split_repeats``
    (the base side): whether ``ID#rK`` sessions are repeats, which holds only when the candidate's are
    too; a step-mode replay of a run of trials keeps their session ids as they are."""
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
    allow_partial: bool = False,
    alignment: str = "auto",
    outcome_config: OutcomeConfig | None = None,
) -> DiffResult:
    """Compare ``candidate`` with ``base`` (see the module docstring). ``alignment``: ``auto`` (by
    commit when both runs ran the agent, else by step), ``session`` or ``step``. With ``noise_run``
    (a self-replay of the base model) or a candidate with repeats, the summary gets ``drift``: the
    noise floor, the candidate's divergence and the bootstrap interval of their difference. A partial
    run is refused unless ``allow_partial``; a comparison of nothing is an error."""
    with _no_cyclic_gc():
        return _diff_runs(
            store,
            base,
            candidate,
            config or DiffConfig(),
            save=save,
            noise_run=noise_run,
            resamples=resamples,
            seed=seed,
            allow_partial=allow_partial,
            alignment=alignment,
            outcome_config=outcome_config or OutcomeConfig(),
        )


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a diff builds its objects: a large diff makes hundreds
    of thousands of small dicts and lists, none of them in a cycle, and every collection walks them
    all again (a 1M-event diff with half its sessions diverged: 3.3 s with it, 2.6 s without)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _diff_runs(
    store: Store,
    base: str,
    candidate: str,
    config: DiffConfig,
    *,
    save: bool,
    noise_run: str | None,
    resamples: int,
    seed: int,
    allow_partial: bool,
    alignment: str,
    outcome_config: OutcomeConfig,
) -> DiffResult:
    if alignment not in ALIGNMENTS:
        raise SdbError(f"alignment {alignment!r}: use one of {', '.join(ALIGNMENTS)}")
    base_manifest = store.manifest(base)  # an unknown run is a one-line error, not an empty side
    cand_manifest = store.manifest(candidate)
    base, candidate = base_manifest.run_id, cand_manifest.run_id
    if not allow_partial:
        refuse_partial(base_manifest, cand_manifest)
    closed_loop = _closed(cand_manifest)
    both_closed = closed_loop and _closed(base_manifest)
    if alignment == "session" and not both_closed:
        step_run = candidate if not closed_loop else base
        raise SdbError(
            f"run {step_run!r} is a step-mode replay (teacher-forced): it aligns by step, not by session "
            "(use --align step or auto)"
        )
    by_commit = both_closed and alignment != "step"
    con = connect(store, runs=(base, candidate))  # the two runs only: the rest of the store is not read
    names = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT name FROM events WHERE run_id IN (?, ?) AND kind = 'action'", [base, candidate]
        ).fetchall()
    ]
    declared = _declared_read(base_manifest, cand_manifest)
    con.register("layers", pa.table({"name": names, "layer": [config.layer(n, declared) for n in names]}))
    # by commit, a base of trials is its repeat 0; a step-mode replay keeps the ids its source had
    split = True if by_commit else _session_repeats(cand_manifest)
    _load(con, "b", base, base_manifest, base_side=True, split_repeats=split)
    _load(con, "c", candidate, cand_manifest, base_side=False)
    errors = _rows(
        con,
        "SELECT session_id, coalesce(step, '') AS step, seq, name, payload FROM events "
        "WHERE run_id = ? AND kind = 'error' AND name = 'provider' ORDER BY session_id, seq",
        [candidate],
    )
    if by_commit:
        from sdbctl.sdb.diff.commits import compare_commits

        compared = compare_commits(con, base, candidate, config)
    else:
        compared = _compare_steps(con, base, candidate, config, closed_loop, errors)
    divergences = compared.divergences
    _mark_first(divergences)
    if not any(compared.units[layer] for layer in LAYERS):
        raise SdbError(
            f"nothing to compare between {base!r} and {candidate!r}: neither run has a model action "
            "(an action event answering an llm event, or any action in a run with no llm event) outside the "
            "steps that ended in a provider error"
        )
    success = _success_states(outcome_config, base_manifest, cand_manifest)
    outcomes = None
    if by_commit or closed_loop:
        outcomes = compare_outcomes(
            session_outcomes(con, base, success, outcome_config.pass_threshold),
            session_outcomes(con, candidate, success, outcome_config.pass_threshold),
        )
    summary = _summary(compared, config, con, base, candidate, errors)
    summary["comparison"] = "commit" if by_commit else "step"
    summary["outcomes"] = outcomes
    summary["partial"] = [m.run_id for m in (base_manifest, cand_manifest) if m.status == "partial"]
    cand_rates = compared.session_rates(config.layers)
    noise_rates: dict[str, float] | None = None
    source = None
    if noise_run is not None:
        noise = diff_runs(store, base, noise_run, config, save=False, allow_partial=allow_partial, alignment=alignment)
        noise_rates = noise.session_rates
        source = f"self-replay {noise.candidate_run}"
    elif len(compared.repeats) > 1:
        found = compared.repeat_noise(con, config)
        # a session whose repeats gave nothing to disagree on (none committed anything) has no noise:
        # it stays in the test, so a candidate that lost whole sessions is not judged on the rest
        noise_rates = {s: found.get(s, 0.0) for s in cand_rates}
        source = f"{len(compared.repeats)} repeats of the candidate"
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


@dataclass
class Compared:
    """What one comparison found: the divergences and, per layer and session, the units compared and
    the units diverged.

    A unit is a (step, repeat) in a comparison by step, and an aligned position (a pair of committed
    actions, or one side's unpaired action) in a comparison by commit; both counts include every
    repeat. Over several layers, their units add up.
    """

    divergences: list[Divergence]
    units: dict[str, Counter[str]]  #: layer -> session -> units compared
    diverged: dict[str, Counter[str]]  #: layer -> session -> units with a divergence
    repeats: list[int]
    attempts: dict[str, dict[str, int]] = field(default_factory=dict)  #: side -> status -> uncommitted actions
    parse_failures: int = 0  #: the candidate's parse failures the base did not have
    noise: Callable[[Any, DiffConfig], dict[str, float]] | None = None  #: the noise floor from repeats

    def totals(self, layers: Sequence[str]) -> tuple[int, int, set[str], set[str]]:
        """Units compared and diverged, and sessions compared and diverged, over ``layers``."""
        units = sum(sum(self.units.get(x, Counter()).values()) for x in layers)
        diverged = sum(sum(self.diverged.get(x, Counter()).values()) for x in layers)
        sessions = {s for x in layers for s, n in self.units.get(x, Counter()).items() if n}
        hit = {s for x in layers for s, n in self.diverged.get(x, Counter()).items() if n}
        return units, diverged, sessions, hit & sessions

    def session_rates(self, layers: Sequence[str]) -> dict[str, float]:
        """Per session: the share of its units (in ``layers``) with a divergence."""
        units: Counter[str] = Counter()
        diverged: Counter[str] = Counter()
        for x in layers:
            units.update(self.units.get(x, Counter()))
            diverged.update(self.diverged.get(x, Counter()))
        return {s: min(1.0, diverged[s] / n) for s, n in units.items() if n}

    def repeat_noise(self, con: Any, config: DiffConfig) -> dict[str, float]:
        return self.noise(con, config) if self.noise is not None else {}


def _mark_first(divs: list[Divergence]) -> None:
    """``after_first`` on every divergence but the first of its (session, repeat, layer), in order."""
    seen: set[tuple[str, int, str]] = set()
    for d in divs:
        key = (d.session_id, d.repeat, d.layer)
        d.after_first = key in seen
        seen.add(key)


def _compare_steps(
    con: Any, base: str, candidate: str, config: DiffConfig, closed_loop: bool, errors: list[dict[str, Any]]
) -> Compared:
    """The comparison by step (see the module docstring)."""
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
            "JOIN events e ON e.run_id = $run AND e.session_id = b.raw_sid AND e.seq = b.seq "
            "ORDER BY session_id, step, seq",
            {"run": base},
        ):
            base_rows[(row["session_id"], row["step"])].append(row)
        for row in _rows(
            con,
            "SELECT c.*, e.payload FROM c JOIN g USING (session_id, step, rep) JOIN events e ON e.run_id = $run "
            "AND e.session_id = c.raw_sid AND e.seq = c.seq ORDER BY session_id, step, seq",
            {"run": candidate},
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
            closed_loop,
            pending,
        )
    divergences += explain(pending, config, closed_loop)
    if closed_loop:
        divergences += states_changed(con, base, candidate)
    divergences.sort(key=lambda d: (d.session_id, d.repeat, d.step or "", _seq(d.base_seq), _seq(d.candidate_seq)))
    failures = sum(1 for d in divergences if d.reason == "parse_failed" and d.candidate_seq is not None)
    diverged: dict[str, Counter[str]] = {layer: Counter() for layer in LAYERS}
    for layer, session, _step, _rep in {(d.layer, d.session_id, d.step or "", d.repeat) for d in divergences}:
        diverged[layer][session] += 1

    def noise(con: Any, config: DiffConfig) -> dict[str, float]:
        return _repeat_disagreement(con, config.layers)

    return Compared(divergences, units, diverged, repeats, parse_failures=failures, noise=noise)


_KEY_SCHEMA = pa.schema([pa.field("session_id", pa.string()), pa.field("step", pa.string())])


def divergence(
    reason: str,
    b: dict[str, Any] | None,
    c: dict[str, Any] | None,
    *,
    session_id: str,
    rep: int,
    step: str | None = None,
) -> Divergence:
    """A divergence between base row ``b`` and candidate row ``c`` (either may be missing)."""
    side = c or b or {}
    return Divergence(
        session_id=session_id,
        step=step if step is not None else ((b or {}).get("step") or side.get("step") or None),
        repeat=rep,
        base_seq=b["seq"] if b else None,
        candidate_seq=c["seq"] if c else None,
        reason=reason,
        base_action=b["name"] if b else None,
        candidate_action=c["name"] if c else None,
        pattern=side.get("pattern"),
        layer=side.get("layer") or "write",
    )


def _classify(
    session_id: str,
    step: str,
    rep: int,
    base: list[dict[str, Any]],
    cand: list[dict[str, Any]],
    closed_loop: bool,
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]],
) -> list[Divergence]:
    """Classify one mismatched step. Same-action pairs whose digests differ go to ``pending``, to be
    explained in one batch per action (see :func:`explain`)."""
    out: list[Divergence] = []

    def div(reason: str, b: dict[str, Any] | None, c: dict[str, Any] | None) -> None:
        out.append(divergence(reason, b, c, session_id=session_id, rep=rep, step=step or None))

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


def explain(
    pending: list[tuple[Divergence, dict[str, Any], dict[str, Any]]], config: DiffConfig, closed_loop: bool
) -> list[Divergence]:
    """Explain the pending same-action pairs whose digests differ. Speech: by similarity, a
    ``speech_changed`` below the threshold. Else DeepDiff, one call per action (its tolerance):
    ``args_changed`` with the field paths, or nothing when the tolerances absorb the difference (or
    ``gate_changed`` when only the guard's verdict moved)."""
    by_action: dict[str, list[tuple[Divergence, dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for item in pending:
        by_action[item[2]["name"]].append(item)
    out: list[Divergence] = []
    for action, items in by_action.items():
        pairs = [
            (orjson.loads(b["payload"]).get("args") or {}, orjson.loads(c["payload"]).get("args") or {})
            for _, b, c in items
        ]
        if items[0][0].layer == "speech":
            for (div, b, c), (old, new) in zip(items, pairs, strict=True):
                score = similarity(old, new)
                if score < config.speech_threshold:
                    div.reason, div.similarity = "speech_changed", score
                    out.append(div)
                elif closed_loop and b["status"] != c["status"]:
                    div.reason = "gate_changed"
                    out.append(div)
            continue
        for (div, b, c), fields in zip(items, field_changes_many(pairs, config.tolerance(action)), strict=True):
            if fields:
                div.fields = fields
                out.append(div)
            elif closed_loop and b["status"] != c["status"]:
                div.reason = "gate_changed"
                out.append(div)
    return out


def states_changed(con: Any, base: str, candidate: str) -> list[Divergence]:
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


def _summary(
    compared: Compared, config: DiffConfig, con: Any, base: str, candidate: str, errors: list[dict[str, Any]]
) -> dict[str, Any]:
    divs = compared.divergences
    units, diverged, sessions, hit = compared.totals(config.layers)
    by_layer = {}
    for layer in LAYERS:
        lu, ld, ls, lh = compared.totals((layer,))
        by_layer[layer] = {
            "steps_compared": lu,
            "steps_diverged": ld,
            "sessions_compared": len(ls),
            "sessions_diverged": len(lh),
            "divergences": sum(1 for d in divs if d.layer == layer),
        }
    first: dict[str, dict[str, Any]] = {}
    for d in divs:
        if d.layer in config.layers and not d.after_first and d.repeat == min(compared.repeats):
            first.setdefault(
                d.session_id,
                {
                    "step": d.step,
                    "reason": d.reason,
                    "layer": d.layer,
                    "base_seq": d.base_seq,
                    "candidate_seq": d.candidate_seq,
                    "action": d.candidate_action or d.base_action,
                },
            )
    terminal = con.execute(
        f"""
        WITH t AS (SELECT run_id, session_id, arg_max(name, seq) AS last FROM events
                   WHERE run_id IN (?, ?) AND kind = 'state' AND name NOT LIKE 'replay:%' AND name <> 'outcome'
                   GROUP BY ALL)
        SELECT b.session_id, b.last, c.last FROM (SELECT * FROM t WHERE run_id = ?) b
        JOIN (SELECT * FROM t WHERE run_id = ? AND NOT regexp_matches(session_id, '{REPEAT_SUFFIX}')) c
          USING (session_id)
        WHERE b.last <> c.last ORDER BY 1
    """,
        [base, candidate, base, candidate],
    ).fetchall()
    k = max(1, len(compared.repeats))
    pass_k = None
    if k > 1:
        clean = {s for s in sessions}
        bad = {(d.session_id, d.repeat) for d in divs if d.layer in config.layers}
        pass_k = sum(all((s, r) not in bad for r in compared.repeats) for s in clean) / len(clean) if clean else None
    gated = [d for d in divs if d.layer in config.layers]
    return {
        "base_run": base,
        "candidate_run": candidate,
        "layers": list(config.layers),
        "repeats": k,
        "steps_compared": units,
        "steps_diverged": diverged,
        "step_divergence_rate": diverged / units if units else 0.0,
        "sessions_compared": len(sessions),
        "session_ids": sorted(sessions),
        "sessions_diverged": len(hit),
        "session_divergence_rate": len(hit) / len(sessions) if sessions else 0.0,
        "divergences": len(divs),
        "errors": len(errors),
        "parse_failures": compared.parse_failures,
        "attempts": compared.attempts,
        "by_layer": by_layer,
        "by_reason": dict(sorted(Counter(d.reason for d in gated).items())),
        "by_action": dict(sorted(Counter(d.candidate_action or d.base_action or "?" for d in gated).items())),
        "by_pattern": dict(sorted(Counter(d.pattern or "" for d in gated).items())),
        "by_reason_all_layers": dict(sorted(Counter(d.reason for d in divs).items())),
        "first_divergence": first,
        "terminal_changes": [{"session_id": s, "base": b, "candidate": c} for s, b, c in terminal],
        "pass_k": pass_k,
    }


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


def save_divergences(store: Store, result: DiffResult) -> None:
    """Write the divergences as ``diffs/<base>..<candidate>/divergences.parquet`` (the ``divergences`` view),
    the folder named by :func:`sdb.store.layout.diff_key`: one folder per pair of runs, also for ids
    that hold ``..``."""
    folder = store.diff_dir(result.base_run, result.candidate_run)
    store.loc.make_dir(folder)
    divs = result.divergences
    columns: dict[str, list[Any]] = {
        name: [getattr(d, name) for d in divs]
        for name in DIVERGENCE_SCHEMA.names
        if name not in ("fields", "base_run", "candidate_run")
    }
    columns["fields"] = [orjson.dumps(d.fields, default=str).decode() for d in divs]
    columns["base_run"] = [result.base_run] * len(divs)
    columns["candidate_run"] = [result.candidate_run] * len(divs)
    table = pa.table({name: columns[name] for name in DIVERGENCE_SCHEMA.names}, schema=DIVERGENCE_SCHEMA)
    store.loc.write_parquet(table, f"{folder}/divergences.parquet")
    store.loc.write_bytes(
        f"{folder}/summary.json", orjson.dumps(result.summary, default=str, option=orjson.OPT_INDENT_2) + b"\n"
    )


__all__ = ["ALIGNMENTS", "REASONS", "DiffResult", "Divergence", "diff_runs", "refuse_partial"]
