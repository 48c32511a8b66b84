"""The summary of a comparison: its headline figures over the configured layers, each layer's own,
the counts by reason, action and pattern, each session's first divergence and its changed ends, and
its drift test (the candidate against the noise floor, :mod:`sdb.diff._drift`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sdbctl.sdb.diff._cached import cached_answers
from sdbctl.sdb.diff._compared import Compared
from sdbctl.sdb.diff._config import LAYERS, DiffConfig
from sdbctl.sdb.diff._drift import DriftResult, drift_test
from sdbctl.sdb.diff._found import quoted
from sdbctl.sdb.diff._outcomes import REPEAT_SUFFIX, OutcomeSummary, last_states
from sdbctl.sdb.diff._power import DEFAULT_TARGET, power_text
from sdbctl.sdb.diff._results import (
    DiffResult,
    DiffSummary,
    Divergences,
    FirstDivergence,
    LayerCounts,
    TerminalChange,
)

# the sessions whose terminal state changed (each run's read once: sdb.diff._outcomes.last_states)
_TERMINAL = f"""
SELECT b.session_id, b.last, c.last FROM (SELECT * FROM last_states WHERE run_id = ?) b
JOIN (SELECT * FROM last_states WHERE run_id = ? AND NOT regexp_matches(session_id, '{REPEAT_SUFFIX}')) c
  USING (session_id)
WHERE b.last <> c.last ORDER BY 1
"""


#: what ``*`` marks in a table of divergences (``after_first`` is false): every output says it so
FIRST_MARK = "the first divergence of its session, repeat and layer"

#: how many names a list of sessions shows before it counts the rest
NAMED = 10


def named(names: Sequence[str], limit: int = NAMED) -> str:
    """``names`` as a list for people: the first ``limit``, then "and N more". The one rule of every
    list of sessions an output names (flips, the sessions a failing check counted); each output
    escapes the text as it escapes any other."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def flip_lines(s: DiffSummary) -> list[tuple[str, str]]:
    """The sessions whose outcome flipped, one ``(label, names)`` per direction that has any: the
    diff's and the gate's table output, the Markdown and the HTML name them alike."""
    if s.outcomes is None:
        return []
    flipped = s.outcomes.flipped
    ways = (("sessions pass -> fail", flipped.negative), ("sessions fail -> pass", flipped.positive))
    return [(label, named(ids)) for label, ids in ways if ids]


def power_lines(s: DiffSummary) -> list[str]:
    """What the two tests could have seen, one line each (or why one did not run), and the sessions
    left out with --allow-partial: the same text in every output, so a PASS with no power reads so."""
    drift, outcomes = s.drift, s.outcomes
    lines = [
        f"drift test ({drift.sessions} sessions): "
        + power_text(drift.min_detectable, drift.target, drift.sessions_needed)
        if drift is not None
        else "drift test: not run (no noise floor: --noise RUN, or a candidate replayed with --repeat)",
        f"outcome test (McNemar at alpha {outcomes.alpha:g}, {outcomes.sessions} sessions): "
        + power_text(outcomes.min_detectable, outcomes.target, outcomes.sessions_needed)
        if outcomes is not None
        else "outcome test: not run (it needs outcomes in both runs)",
    ]
    left = left_out_text(s)
    return lines + ([left] if left else [])


def left_out_text(s: DiffSummary) -> str | None:
    """How many of the base's sessions were left out, as the runs lacking them were compared with
    --allow-partial (None: none)."""
    if not s.left_out:
        return None
    return "left out with --allow-partial: " + ", ".join(
        f"{n} session(s) of the base that run {run!r} lacks"
        + (" (from every figure)" if run == s.candidate_run else " (from the drift test)")
        for run, n in s.left_out.items()
    )


def drift_of(
    compared: Compared,
    con: Any,
    config: DiffConfig,
    cand_rates: Mapping[str, float],
    *,
    self_replay: DiffResult | None,
    resamples: int,
    seed: int,
    target: float = DEFAULT_TARGET,
    noise_note: str | None = None,
) -> DriftResult | None:
    """The drift test of a diff: the candidate's per-session rates (``cand_rates``) against the noise
    floor of a self-replay of the base model (``self_replay``: its diff against the base; ``noise_note``
    said beside its name, such as that its model could not be checked), else of the candidate's
    repeats against each other; None with neither, or no session in common."""
    if self_replay is not None:
        noise_rates, source = self_replay.session_rates, f"self-replay {self_replay.candidate_run}"
        source += f"; {noise_note}" if noise_note else ""
    elif len(compared.repeats) > 1:
        found = compared.repeat_noise(con, config)
        # a session whose repeats gave nothing to disagree on (none committed anything) has no noise:
        # it stays in the test, so a candidate that lost whole sessions is not judged on the rest
        noise_rates = {s: found.get(s, 0.0) for s in cand_rates}
        source = f"{len(compared.repeats)} repeats of the candidate"
    else:
        return None
    sessions = sorted(set(cand_rates) & set(noise_rates))
    if not sessions:
        return None
    units: Counter[str] = Counter()
    for layer in config.layers:
        units.update(compared.units.get(layer, Counter()))
    return drift_test(
        [cand_rates[x] for x in sessions],
        [noise_rates[x] for x in sessions],
        source=source,
        resamples=resamples,
        seed=seed,
        units=[units[x] for x in sessions],
        target=target,
    )


def _found(divergences: Divergences) -> str:
    """A FROM clause over the diff's divergences, ``file_row_number`` their order."""
    return f"read_parquet({quoted(divergences.path)}, file_row_number = true)"


def count_diverged(con: Any, divergences: Divergences, *, by_step: bool) -> dict[str, Counter[str]]:
    """Layer -> session -> units with a divergence, counted in DuckDB over the diff's divergences: by
    step a unit is a (step, repeat), by commit each divergence is one aligned position."""
    unit = "count(DISTINCT (coalesce(step, ''), repeat))" if by_step else "count(*)"
    out: dict[str, Counter[str]] = {layer: Counter() for layer in LAYERS}
    for layer, session_id, n in con.execute(
        f"SELECT layer, session_id, {unit} FROM {_found(divergences)} GROUP BY ALL"
    ).fetchall():
        out.setdefault(layer, Counter())[session_id] = int(n)
    return out


def _counted(con: Any, divergences: Divergences, what: str, layers: Sequence[str] | None) -> dict[str, int]:
    """``what`` -> divergences (in ``layers``; None: every layer), sorted by ``what``."""
    where = "WHERE list_contains($layers, layer)" if layers is not None else ""
    found = con.execute(
        f"SELECT {what}, count(*) FROM {_found(divergences)} {where} GROUP BY 1",
        {"layers": list(layers)} if layers is not None else {},
    ).fetchall()
    return dict(sorted((str(k), int(n)) for k, n in found))


def build_summary(
    compared: Compared,
    divergences: Divergences,
    config: DiffConfig,
    con: Any,
    base: str,
    candidate: str,
    *,
    errors: int,
    comparison: Literal["commit", "step"],
    outcomes: OutcomeSummary | None,
    partial: list[str],
    drift: DriftResult | None,
    left_out: dict[str, int] | None = None,
) -> DiffSummary:
    """The :class:`DiffSummary` of ``compared`` (``errors``: the candidate's provider errors), its
    counts of divergences taken in DuckDB over their file, never from a list of them."""
    units, diverged, sessions, hit = compared.totals(config.layers)
    layers = list(config.layers)
    per_layer = _counted(con, divergences, "layer", None)
    by_layer = {}
    for layer in LAYERS:
        lu, ld, ls, lh = compared.totals((layer,))
        by_layer[layer] = LayerCounts(
            steps_compared=lu,
            steps_diverged=ld,
            sessions_compared=len(ls),
            sessions_diverged=len(lh),
            divergences=per_layer.get(layer, 0),
            attempts=compared.attempts_in((layer,)),
        )
    first: dict[str, FirstDivergence] = {}
    for session_id, step, reason, layer, base_seq, cand_seq, action in con.execute(
        "SELECT session_id, step, reason, layer, base_seq, candidate_seq, "
        "coalesce(nullif(candidate_action, ''), base_action) "
        f"FROM {_found(divergences)} WHERE list_contains($layers, layer) AND NOT after_first "
        "AND repeat = $rep QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY file_row_number) = 1 "
        "ORDER BY file_row_number",
        {"layers": layers, "rep": min(compared.repeats)},
    ).fetchall():
        first[session_id] = FirstDivergence(
            step=step, reason=reason, layer=layer, base_seq=base_seq, candidate_seq=cand_seq, action=action
        )
    last_states(con, base, candidate)
    terminal = con.execute(_TERMINAL, [base, candidate]).fetchall()
    k = max(1, len(compared.repeats))
    pass_k = None
    if k > 1 and sessions:
        bad = {
            (str(s), int(r))
            for s, r in con.execute(
                f"SELECT DISTINCT session_id, repeat FROM {_found(divergences)} WHERE list_contains($layers, layer)",
                {"layers": layers},
            ).fetchall()
        }
        pass_k = sum(all((s, r) not in bad for r in compared.repeats) for s in sessions) / len(sessions)
    cached, answers = cached_answers(con, candidate)
    return DiffSummary(
        base_run=base,
        candidate_run=candidate,
        layers=layers,
        repeats=k,
        steps_compared=units,
        steps_diverged=diverged,
        step_divergence_rate=diverged / units if units else 0.0,
        sessions_compared=len(sessions),
        session_ids=sorted(sessions),
        sessions_diverged=len(hit),
        session_divergence_rate=len(hit) / len(sessions) if sessions else 0.0,
        divergences=len(divergences),
        errors=errors,
        parse_failures=compared.parse_failures,
        attempts=compared.attempts_in(config.layers),
        by_layer=by_layer,
        by_reason=_counted(con, divergences, "reason", layers),
        by_action=_counted(
            con, divergences, "coalesce(nullif(candidate_action, ''), nullif(base_action, ''), '?')", layers
        ),
        by_pattern=_counted(con, divergences, "coalesce(pattern, '')", layers),
        by_reason_all_layers=_counted(con, divergences, "reason", None),
        first_divergence=first,
        terminal_changes=[TerminalChange(session_id=s, base=b, candidate=c) for s, b, c in terminal],
        pass_k=pass_k,
        comparison=comparison,
        outcomes=outcomes,
        partial=partial,
        left_out=left_out or {},
        drift=drift,
        cached_answers=cached,
        answers=answers,
    )
