"""The differ: align each session of two runs, compare digests in DuckDB, explain mismatches with DeepDiff.

What is compared is the *model's* actions: ``action`` events whose parent is an ``llm`` event (the
proposals that crossed, or failed to cross, the boundary); in a run with no ``llm`` event at all (a
tool-call log), every action. Each action has a *layer* (``write``, ``read``, ``speech``; see
:class:`DiffConfig`). What is compared depends on what happened, as the boundary's contract says:

- **By commit** (both runs ran the agent: recordings, imports, session-mode replays): per session and
  layer, the sequence of *committed* actions (status ok, and an effect that succeeded, or no effect
  recorded for any action of that name in the run), aligned over the whole session
  (:mod:`sdb.diff._commits`). Failed, refused and invalid attempts are counted apart.
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
from sdbctl.sdb.diff._config import LAYERS, DiffConfig, Tolerance, load_config, parse_layers, tolerance_flags
from sdbctl.sdb.diff._differ import ALIGNMENTS, diff_runs
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
from sdbctl.sdb.diff._results import (
    REASONS,
    DiffResult,
    DiffSummary,
    Divergence,
    FirstDivergence,
    LayerCounts,
    TerminalChange,
)

__all__ = [
    "ALIGNMENTS",
    "LAYERS",
    "REASONS",
    "DiffConfig",
    "DiffResult",
    "DiffSummary",
    "Divergence",
    "DriftResult",
    "FirstDivergence",
    "Flips",
    "LayerCounts",
    "OutcomeConfig",
    "OutcomeSummary",
    "Pair",
    "PassK",
    "TerminalChange",
    "Tolerance",
    "align",
    "align_by_name",
    "diff_runs",
    "drift_test",
    "load_config",
    "load_outcome_config",
    "mcnemar_one_sided",
    "parse_layers",
    "pass_hat_k",
    "tolerance_flags",
]
