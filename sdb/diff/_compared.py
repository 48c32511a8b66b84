"""What a comparison (by step or by commit) hands to the summary: the divergences (written as they
were found: :mod:`sdb.diff._found`) and the units counted, in one shape for both, so the summary, the
drift test and the gate need not know which ran."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdbctl.sdb.diff._config import DiffConfig
from sdbctl.sdb.diff._found import Found
from sdbctl.sdb.diff._results import Divergence

# same-action pairs whose digests differ, waiting to be explained in one batch (base row, candidate row)
Pending = list[tuple[Divergence, dict[str, Any], dict[str, Any]]]


@dataclass
class Compared:
    """What one comparison found: the divergences and, per layer and session, the units compared and
    the units diverged.

    A unit is a (step, repeat) in a comparison by step, and an aligned position (a pair of committed
    actions, or one side's unpaired action) in a comparison by commit; both counts include every
    repeat. Over several layers, their units add up. ``diverged`` is counted over the divergences
    once they are in order (:func:`sdb.diff._summary.count_diverged`).
    """

    found: Found  #: the divergences, as they were found
    units: dict[str, Counter[str]]  #: layer -> session -> units compared
    repeats: list[int]  #: the candidate's repeat indexes
    diverged: dict[str, Counter[str]] = field(default_factory=dict)  #: layer -> session -> units with a divergence
    #: by commit: side -> layer -> status -> uncommitted actions
    attempts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    parse_failures: int = 0  #: the candidate's parse failures the base did not have
    noise: Callable[[Any, DiffConfig], dict[str, float]] | None = None  #: the noise floor from repeats

    def totals(self, layers: Sequence[str]) -> tuple[int, int, set[str], set[str]]:
        """Units compared and diverged, and sessions compared and diverged, over ``layers``."""
        units = sum(sum(self.units.get(x, Counter()).values()) for x in layers)
        diverged = sum(sum(self.diverged.get(x, Counter()).values()) for x in layers)
        sessions = {s for x in layers for s, n in self.units.get(x, Counter()).items() if n}
        hit = {s for x in layers for s, n in self.diverged.get(x, Counter()).items() if n}
        return units, diverged, sessions, hit & sessions

    def attempts_in(self, layers: Sequence[str]) -> dict[str, dict[str, int]]:
        """Side -> status -> uncommitted actions over ``layers`` (never a read counted as a write)."""
        out: dict[str, dict[str, int]] = {}
        for side, by_layer in self.attempts.items():
            counts: Counter[str] = Counter()
            for x in layers:
                counts.update(by_layer.get(x, {}))
            out[side] = dict(sorted(counts.items()))
        return out

    def session_rates(self, layers: Sequence[str]) -> dict[str, float]:
        """Per session: the share of its units (in ``layers``) with a divergence."""
        units: Counter[str] = Counter()
        diverged: Counter[str] = Counter()
        for x in layers:
            units.update(self.units.get(x, Counter()))
            diverged.update(self.diverged.get(x, Counter()))
        return {s: min(1.0, diverged[s] / n) for s, n in units.items() if n}

    def repeat_noise(self, con: Any, config: DiffConfig) -> dict[str, float]:
        """Per session, how much the candidate's repeats disagree with its repeat 0 (the noise floor)."""
        return self.noise(con, config) if self.noise is not None else {}


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
