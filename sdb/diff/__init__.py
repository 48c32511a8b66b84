"""The differ: align each session of two runs, compare digests in DuckDB, explain mismatches with DeepDiff.

The divergences are written to a Parquet file as they are found and summarised in DuckDB, never held
as a list (:mod:`sdb.diff._found`); a :class:`DiffResult` reads them back from that file
(:class:`Divergences`).

What is compared is the *model's* actions: ``action`` events whose parent is an ``llm`` event (the
proposals that crossed, or failed to cross, the boundary); in a run with no ``llm`` event at all (a
tool-call log), every action. Each action has a *layer* (``write``, ``read``, ``speech``; see
:class:`DiffConfig`). What is compared depends on what happened, as the boundary's contract says:

- **By commit** (both runs ran the agent: recordings, imports, session-mode replays): per session and
  layer, the sequence of *committed* actions (status ok, and its effects succeeded; with none, unless
  its own session records effects of that action name or the config says it needs one), aligned over
  the whole session (:mod:`sdb.diff._commits`). Failed, refused and invalid attempts are counted
  apart, per layer.
- **By step** (a step-mode replay: teacher-forced, so step k of both runs answered the same
  question): actions are grouped by (session, step) and only the groups that differ come to Python
  (:mod:`sdb.diff._steps`). Candidate provider errors are reported apart and their steps are not
  compared. When the candidate ran the agent (``--align step`` on two closed-loop runs), states
  (``state_changed``) and guard verdicts (``gate_changed``) are compared too.

Speech is compared by similarity (:mod:`sdb.diff._speech`). The headline rates, the noise floor and the
gate count the configured layers (default ``write``); every divergence carries its layer, and the
:class:`DiffSummary` has each layer's figures under ``by_layer``.

This module is the package's whole interface; its modules are private.
"""

from sdbctl.sdb.diff._align import Pair, align, align_by_name
from sdbctl.sdb.diff._cached import cached_answers, cached_text
from sdbctl.sdb.diff._config import (
    LAYERS,
    DiffConfig,
    Rule,
    Tolerance,
    load_config,
    parse_layers,
    rules_text,
    tolerance_flags,
)
from sdbctl.sdb.diff._differ import ALIGNMENTS, diff_runs, run_outcomes
from sdbctl.sdb.diff._drift import DriftResult, drift_test
from sdbctl.sdb.diff._outcomes import (
    Flips,
    OutcomeConfig,
    OutcomeSummary,
    PassK,
    load_outcome_config,
    mcnemar_one_sided,
    pass_hat_k,
)
from sdbctl.sdb.diff._power import DEFAULT_TARGET, detectable_text, points, power_text
from sdbctl.sdb.diff._results import (
    REASONS,
    DiffResult,
    DiffSummary,
    Divergence,
    Divergences,
    FirstDivergence,
    LayerCounts,
    TerminalChange,
)
from sdbctl.sdb.diff._save import divergence_table
from sdbctl.sdb.diff._staging import Shape, shape
from sdbctl.sdb.diff._summary import FIRST_MARK, NAMED, flip_lines, left_out_text, named, power_lines

__all__ = [
    "ALIGNMENTS",
    "DEFAULT_TARGET",
    "FIRST_MARK",
    "LAYERS",
    "NAMED",
    "REASONS",
    "DiffConfig",
    "DiffResult",
    "DiffSummary",
    "Divergence",
    "Divergences",
    "DriftResult",
    "FirstDivergence",
    "Flips",
    "LayerCounts",
    "OutcomeConfig",
    "OutcomeSummary",
    "Pair",
    "PassK",
    "Rule",
    "Shape",
    "TerminalChange",
    "Tolerance",
    "align",
    "align_by_name",
    "cached_answers",
    "cached_text",
    "detectable_text",
    "diff_runs",
    "divergence_table",
    "drift_test",
    "flip_lines",
    "left_out_text",
    "load_config",
    "load_outcome_config",
    "mcnemar_one_sided",
    "named",
    "parse_layers",
    "pass_hat_k",
    "points",
    "power_lines",
    "power_text",
    "rules_text",
    "run_outcomes",
    "shape",
    "tolerance_flags",
]
