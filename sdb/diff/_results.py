"""What a diff returns: the divergences, and the typed summary that ``--json``, the saved
``summary.json``, the gate and the report all read (serialised by :func:`sdb.results.as_json`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sdbctl.sdb.diff._config import Rule
from sdbctl.sdb.diff._drift import DriftResult
from sdbctl.sdb.diff._outcomes import OutcomeSummary
from sdbctl.sdb.results import OMIT_NONE, SKIP, as_json

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
    #: its place in the session's alignment (for sorting; not in the JSON)
    order: int = field(default=0, repr=False, compare=False, metadata={SKIP: True})

    def changes(self) -> str:
        """The changed fields as one line, ``path: old -> new; ...`` (every output shows them so)."""
        return "; ".join(f"{f['path']}: {f['old']} -> {f['new']}" for f in self.fields)

    def as_dict(self) -> dict[str, Any]:
        """The divergence's JSON: the two action names nested as ``action {base, candidate}``, as
        ``--json`` has always printed them (the Parquet file keeps them flat)."""
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


@dataclass(kw_only=True)
class LayerCounts:
    """One layer's figures (the summary's headline figures count the configured layers together)."""

    steps_compared: int  #: units compared: a (step, repeat) by step, an aligned position by commit
    steps_diverged: int  #: units with a divergence
    sessions_compared: int  #: sessions with a unit compared
    sessions_diverged: int  #: sessions with a unit diverged
    divergences: int  #: the layer's divergences
    #: by commit: side (base, candidate) -> status -> the layer's uncommitted actions
    attempts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(kw_only=True)
class FirstDivergence:
    """The first divergence of a session (repeat 0, the headline layers): where to start reading."""

    step: str | None  #: its step key
    reason: str  #: one of :data:`REASONS`
    layer: str  #: write, read or speech
    base_seq: int | None  #: seq of the base's action
    candidate_seq: int | None  #: seq of the candidate's action
    action: str | None  #: the candidate's action name, else the base's


@dataclass(kw_only=True)
class TerminalChange:
    """A session whose last state differs between the runs."""

    session_id: str  #: the session
    base: str  #: the base's last state
    candidate: str  #: the candidate's last state


@dataclass(kw_only=True)
class DiffSummary:
    """The figures of a diff. The headline figures (``steps_*``, ``sessions_*``, ``by_reason``,
    ``by_action``, ``by_pattern``) count the layers in ``layers``; ``by_layer`` has each layer's own."""

    base_run: str  #: the base run's id
    candidate_run: str  #: the candidate run's id
    layers: list[str]  #: the layers the headline figures (and the gate) count
    repeats: int  #: the candidate's repeats (1 without)
    steps_compared: int  #: units compared (see :class:`LayerCounts`), every repeat included
    steps_diverged: int  #: units with a divergence
    step_divergence_rate: float  #: steps_diverged / steps_compared (0.0 when nothing was compared)
    sessions_compared: int  #: sessions with a unit compared
    session_ids: list[str]  #: those sessions, sorted
    sessions_diverged: int  #: sessions with a unit diverged
    session_divergence_rate: float  #: sessions_diverged / sessions_compared
    divergences: int  #: every divergence, in every layer
    errors: int  #: the candidate's provider errors (their steps are not compared)
    parse_failures: int  #: the candidate's parse failures beyond the base's
    attempts: dict[str, dict[str, int]]  #: by commit: side -> status -> uncommitted actions (headline layers)
    by_layer: dict[str, LayerCounts]  #: layer -> its figures, for every layer
    by_reason: dict[str, int]  #: reason -> divergences (headline layers)
    by_action: dict[str, int]  #: action -> divergences (headline layers)
    by_pattern: dict[str, int]  #: runtime pattern -> divergences (headline layers; "" for none)
    by_reason_all_layers: dict[str, int]  #: reason -> divergences, every layer
    first_divergence: dict[str, FirstDivergence]  #: session -> its first divergence
    terminal_changes: list[TerminalChange]  #: sessions whose last state differs
    pass_k: float | None  #: with repeats: the share of sessions with no divergence in any repeat
    comparison: Literal["commit", "step"]  #: by commit (both runs ran the agent) or by step
    outcomes: OutcomeSummary | None  #: outcome flips and their test (None without outcomes on both sides)
    partial: list[str]  #: the runs compared although partial (--allow-partial)
    #: run -> the base's sessions it lacks, left out of every figure (--allow-partial; a noise run's:
    #: of the drift test)
    left_out: dict[str, int] = field(default_factory=dict)
    #: the candidate against the noise floor; None, and left out of the JSON, without one
    drift: DriftResult | None = field(default=None, metadata={OMIT_NONE: True})
    cached_answers: int = 0  #: the candidate's answers that came from a response cache, not its model
    answers: int = 0  #: the candidate's answers (llm events)
    #: the rules of the verdict (layers, success) and where each came from; obeyed false: a manifest's
    #: copy that differs, shown only
    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiffSummary:
        """A summary read back from its JSON (a saved ``summary.json``); ValueError when it is not one."""
        try:
            values = dict(data)
            values["by_layer"] = {k: LayerCounts(**v) for k, v in values["by_layer"].items()}
            values["first_divergence"] = {k: FirstDivergence(**v) for k, v in values["first_divergence"].items()}
            values["terminal_changes"] = [TerminalChange(**t) for t in values["terminal_changes"]]
            outcomes, drift = values.get("outcomes"), values.get("drift")
            values["outcomes"] = OutcomeSummary.from_json(outcomes) if outcomes is not None else None
            values["drift"] = DriftResult.from_json(drift) if drift is not None else None
            values["rules"] = [Rule(**{**r, "values": tuple(r["values"])}) for r in values.get("rules", [])]
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a diff summary: {exc}") from None


@dataclass
class DiffResult:
    """A diff: its summary, its divergences and the candidate's provider errors."""

    base_run: str
    candidate_run: str
    summary: DiffSummary
    divergences: list[Divergence]
    errors: list[dict[str, Any]]  #: the candidate's provider errors: ``{session_id, step, seq, message}``
    session_rates: dict[str, float] = field(default_factory=dict)  #: per session: share of units diverged

    def gated(self) -> list[Divergence]:
        """The divergences in the layers the summary's headline figures (and the gate) count."""
        return [d for d in self.divergences if d.layer in self.summary.layers]

    def as_dict(self) -> dict[str, Any]:
        """What ``sdbctl diff --json`` prints."""
        return {
            "summary": as_json(self.summary),
            "divergences": [d.as_dict() for d in self.divergences],
            "errors": self.errors,
        }
