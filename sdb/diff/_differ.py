"""``diff_runs``: check the two runs, stage them, run the comparison that fits them, and put the
result together (summary, outcomes, drift); see the package docstring for what is compared."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from sdbctl.sdb.agents import Workload, pure_actions, success_states
from sdbctl.sdb.diff._commits import compare_commits
from sdbctl.sdb.diff._config import LAYERS, DiffConfig, Rule
from sdbctl.sdb.diff._coverage import drop_sessions, lacking_sessions
from sdbctl.sdb.diff._noise import check_self_replay
from sdbctl.sdb.diff._outcomes import (
    OutcomeConfig,
    compare_outcomes,
    last_states,
    load_outcome_config,
    session_outcomes,
)
from sdbctl.sdb.diff._power import DEFAULT_TARGET
from sdbctl.sdb.diff._results import DiffResult
from sdbctl.sdb.diff._save import save_divergences
from sdbctl.sdb.diff._staging import mark, mode_claims, provider_errors, read_runs, shape, stage
from sdbctl.sdb.diff._steps import compare_steps
from sdbctl.sdb.diff._summary import build_summary, count_diverged, drift_of
from sdbctl.sdb.diff._workloads import consulted_workloads
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.store import RunManifest, Store, connect, named_damage

ALIGNMENTS = ("auto", "session", "step")


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
    power_target: float = DEFAULT_TARGET,
    outcome_alpha: float = 0.05,
) -> DiffResult:
    """Compare ``candidate`` with ``base`` (see the package docstring). ``alignment``: ``auto`` (by
    commit when both runs ran the agent, else by step), ``session`` or ``step``. With ``noise_run``
    (a self-replay of the base model) or a candidate with repeats, the summary gets ``drift``: the
    noise floor, the candidate's divergence and the bootstrap interval of their difference. Both tests
    report what they could have seen (the outcome test at ``outcome_alpha``; sessions needed for a
    difference of ``power_target``). A partial run, or a candidate or noise run lacking sessions of
    the base, is refused unless ``allow_partial`` (the lacking sessions are then left out); a
    comparison of nothing is an error. ``save`` writes the result into the store
    (``diffs/<base>..<candidate>/``). What the diff knows of the agent comes from ``config`` and the
    code of the registered workloads the runs name, what each run is from its events; never from a
    manifest, whose differing copies ``summary.rules`` shows as not obeyed. A read that fails on
    what a run holds (a damaged page, a payload that is not JSON) is that run's one-line error."""
    with _no_cyclic_gc(), named_damage(store, (base, candidate, noise_run)):
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
            power_target=power_target,
            outcome_alpha=outcome_alpha,
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


def refuse_empty(*manifests: RunManifest) -> None:
    """A run with no event has nothing to compare, partial or not: refused even with --allow-partial."""
    for m in manifests:
        if m.events == 0:
            raise SdbError(f"run {m.run_id!r} has no events: nothing to compare (sdbctl rm {m.run_id} removes it)")


def refuse_partial(*manifests: RunManifest) -> None:
    """A verdict on half a run is refused: one line naming the partial run and what to do."""
    for m in manifests:
        if m.status == "partial":
            hint = (
                f"complete it with `sdbctl replay --resume {m.run_id} --model MODEL` (the model it was replayed with)"
                if m.source_run and m.mode in ("step", "session")
                else "record it again"
            )
            raise SdbError(
                f"run {m.run_id!r} is partial ({m.interrupted or 'its writer did not finish'}): "
                f"no verdict on half a run; {hint}, or pass --allow-partial"
            )


def _agent_rules(config: DiffConfig, workloads: list[tuple[str, Workload]]) -> DiffConfig:
    """``config`` with the read-only actions the workloads' code declares (``pure=True``)."""
    for name, workload in workloads:
        config = config.with_pure(pure_actions(workload), f"workload {name}")
    return config


def _success_states(config: OutcomeConfig, workloads: list[tuple[str, Workload]]) -> Rule | None:
    """The terminal states that are a success, and where they came from: ``[outcome] success``, else
    what the workload's code declares (``success_states``)."""
    if config.success is not None:
        return Rule("success", config.success, Path(config.source).name if config.source else "config")
    for name, workload in workloads:
        states = success_states(workload)
        if states:
            return Rule("success", states, f"workload {name}")
    return None


def run_outcomes(store: Store, run_id: str, config: OutcomeConfig | None = None) -> dict[str, bool]:
    """Session id -> passed, for each session of ``run_id`` that has an outcome, judged as a diff
    judges it (an imported outcome, else the terminal state against the success states of the
    project's config or the registered workload's code; never a manifest's copy): for an export."""
    manifest = store.manifest(run_id)
    config = config if config is not None else load_outcome_config()
    con = connect(store, runs=(manifest.run_id,))
    workloads = consulted_workloads(
        con, [(manifest, shape(con, manifest.run_id))], success_from_workload=config.success is None
    )
    rule = _success_states(config, workloads)
    found = session_outcomes(con, manifest.run_id, rule.values if rule else None, config.pass_threshold)
    return {sid if rep == 0 else f"{sid}#r{rep}": passed for (sid, rep), passed in found.items()}


def _shown_copies(manifests: tuple[RunManifest, ...], config: DiffConfig, success: Rule | None) -> list[Rule]:
    """The manifests' own copies of the rules, where they differ from the rules applied: shown only."""
    out: list[Rule] = []
    for m in manifests:
        where = f"manifest of run {m.run_id!r}"
        actions, outcome = m.meta.get("actions"), m.meta.get("outcome")
        read = actions.get("read_only") if isinstance(actions, dict) else None
        if isinstance(read, list) and set(map(str, read)) != set(config.pure):
            out.append(Rule("pure", tuple(map(str, read)), where, obeyed=False))
        states = outcome.get("success") if isinstance(outcome, dict) else None
        if isinstance(states, list) and set(map(str, states)) != set(success.values if success else ()):
            out.append(Rule("success", tuple(map(str, states)), where, obeyed=False))
    return out


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
    power_target: float,
    outcome_alpha: float,
) -> DiffResult:
    if alignment not in ALIGNMENTS:
        raise SdbError(f"alignment {alignment!r}: use one of {', '.join(ALIGNMENTS)}")
    base_manifest = store.manifest(base)  # an unknown run is a one-line error, not an empty side
    cand_manifest = store.manifest(candidate)
    base, candidate = base_manifest.run_id, cand_manifest.run_id
    refuse_empty(base_manifest, cand_manifest)
    if not allow_partial:
        refuse_partial(base_manifest, cand_manifest)
    con = connect(store, runs=(base, candidate))  # the two runs only: the rest of the store is not read
    # the diff scans both runs a dozen times: each part's footer parsed once, not at every scan
    con.execute("SET parquet_metadata_cache = true")
    # every result the diff keeps is ordered by its query (ORDER BY), so DuckDB need not keep the parts'
    # row order while it scans them: their scans run in parallel (~10% of a 100,000-session diff)
    con.execute("SET preserve_insertion_order = false")
    mark(con, base, candidate)  # their llm payloads parsed once, in one scan
    base_shape, cand_shape = shape(con, base), shape(con, candidate)  # from the events, not the manifests
    closed_loop = cand_shape.closed
    both_closed = closed_loop and base_shape.closed
    if alignment == "session" and not both_closed:
        step_run = candidate if not closed_loop else base
        raise SdbError(
            f"run {step_run!r} is a step-mode replay (teacher-forced): it aligns by step, not by session "
            "(use --align step or auto)"
        )
    by_commit = both_closed and alignment != "step"
    read_runs(con, base_shape, cand_shape)  # their actions, effects and errors read once, in one scan
    last_states(con, base, candidate)  # and their sessions' terminal states, in one scan for both
    # a name read from a store selects among the workloads registered in this process, never code to
    # import, and only a workload the runs' events fit (sdb.diff._workloads)
    workloads = consulted_workloads(
        con,
        [(base_manifest, base_shape), (cand_manifest, cand_shape)],
        success_from_workload=outcome_config.success is None,
        staged=True,
    )
    config = _agent_rules(config, workloads)
    stage(con, config, base_shape, cand_shape, by_commit=by_commit)
    lacking = lacking_sessions(con, base, candidate, allow_partial=allow_partial)
    errors = provider_errors(con, candidate)
    if by_commit:
        compared = compare_commits(con, base, candidate, config)
    else:
        compared = compare_steps(con, base, candidate, config, closed_loop, errors)
    try:
        divergences = compared.found.finish(con, base, candidate, lacking)  # in order, firsts marked
    except BaseException:
        compared.found.discard()
        raise
    drop_sessions(compared, lacking)
    compared.diverged = count_diverged(con, divergences, by_step=not by_commit)
    if not any(compared.units[layer] for layer in LAYERS):
        raise SdbError(
            f"nothing to compare between {base!r} and {candidate!r}: neither run has a model action "
            "(an action event answering an llm event, or any action in a run with no llm event) outside the "
            "steps that ended in a provider error"
        )
    success_rule = _success_states(outcome_config, workloads)
    success = success_rule.values if success_rule is not None else None
    outcomes = None
    if by_commit or closed_loop:
        outcomes = compare_outcomes(
            session_outcomes(con, base, success, outcome_config.pass_threshold),
            session_outcomes(con, candidate, success, outcome_config.pass_threshold),
            alpha=outcome_alpha,
            target=power_target,
            left_out=lacking,
        )
    cand_rates = compared.session_rates(config.layers)
    self_replay, noise_note = None, None
    if noise_run is not None:
        noise_note = check_self_replay(store, base, noise_run)  # the base's model, as the events say
        self_replay = diff_runs(
            store,
            base,
            noise_run,
            config,
            save=False,
            allow_partial=allow_partial,
            alignment=alignment,
            outcome_config=outcome_config,
        )
    summary = build_summary(
        compared,
        divergences,
        config,
        con,
        base,
        candidate,
        errors=len(errors),
        comparison="commit" if by_commit else "step",
        outcomes=outcomes,
        partial=[m.run_id for m in (base_manifest, cand_manifest) if m.status == "partial"],
        drift=drift_of(
            compared,
            con,
            config,
            cand_rates,
            self_replay=self_replay,
            noise_note=noise_note,
            resamples=resamples,
            seed=seed,
            target=power_target,
        ),
        left_out=({candidate: len(lacking)} if lacking else {})
        | (self_replay.summary.left_out if self_replay is not None else {}),
    )
    manifests = (base_manifest, cand_manifest)
    summary.rules = [
        *config.rules(),
        *([success_rule] if success_rule is not None else []),
        *_shown_copies(manifests, config, success_rule),
        *mode_claims(base_manifest, base_shape),
        *mode_claims(cand_manifest, cand_shape),
    ]
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
        session_rates=cand_rates,
    )
    if save:
        save_divergences(store, result)
    return result
