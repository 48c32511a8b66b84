"""P5 shared state machine: a versioned row; stateless workers propose transitions by compare-and-swap.

A worker proposes ``(state, action) -> next`` on ``(row id, version)``. Only transitions in the
table are legal; a proposal on a stale version is a :class:`CasConflict` and changes nothing.
Timers carry the version they were set at: firing one after the row moved on is a no-op (recorded
as a ``gate`` ``timer`` decision ``stale``). ``human_required`` is an ordinary state. Every
transition writes a ``state`` event named after the state entered, tagged ``P5``.

Divergence here means another path through the table: a different state entered (``state_changed``)
at the same step, or the same state reached by another action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import EventSink

TAG = "P5"
HUMAN_REQUIRED = "human_required"


class CasConflict(SdbError):
    """The row moved on since the proposer read it."""


class IllegalTransition(SdbError):
    """No transition for this (state, action)."""


@dataclass
class StateRow:
    """The versioned row: the single source of truth of one episode's state."""

    id: str
    state: str
    version: int = 1
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timer:
    """A timer set on a row at a version; it acts only if the row is still at that version."""

    row_id: str
    name: str
    action: str
    version: int
    due: int


class StateMachine:
    """A transition table over rows, with compare-and-swap proposals and versioned timers."""

    def __init__(self, transitions: Mapping[tuple[str, str], str], initial: str) -> None:
        self.transitions = dict(transitions)
        self.initial = initial
        self.rows: dict[str, StateRow] = {}

    def create(
        self, sink: EventSink, row_id: str, data: Mapping[str, Any] | None = None, *, step: str | None = None
    ) -> StateRow:
        """Create a row in the initial state (version 1)."""
        row = StateRow(row_id, self.initial, 1, dict(data or {}))
        self.rows[row_id] = row
        sink.state(row.state, {"row": row_id, "version": row.version, "data": row.data}, step=step, pattern=TAG)
        return row

    def propose(
        self,
        sink: EventSink,
        row_id: str,
        expected_version: int,
        action: str,
        data: Mapping[str, Any] | None = None,
        *,
        step: str | None = None,
        actor: str | None = None,
    ) -> StateRow:
        """Apply ``action`` if the row is still at ``expected_version`` and the transition is legal."""
        row = self.rows[row_id]
        if row.version != expected_version:
            sink.gate(
                "cas",
                "conflict",
                f"row {row_id} is at version {row.version}, not {expected_version}",
                step=step,
                actor=actor,
                pattern=TAG,
                status="gated",
            )
            raise CasConflict(f"row {row_id}: expected version {expected_version}, found {row.version}")
        nxt = self.transitions.get((row.state, action))
        if nxt is None:
            legal = sorted(a for (s, a) in self.transitions if s == row.state)
            sink.gate(
                "transition",
                "deny",
                f"no transition for ({row.state}, {action}); legal: {legal}",
                step=step,
                actor=actor,
                pattern=TAG,
            )
            raise IllegalTransition(f"row {row_id}: no transition from {row.state!r} by {action!r}")
        row.state = nxt
        row.version += 1
        row.data.update(data or {})
        sink.state(
            nxt,
            {"row": row_id, "version": row.version, "action": action, "data": dict(data or {})},
            step=step,
            actor=actor,
            pattern=TAG,
        )
        return row

    def set_timer(self, row_id: str, name: str, action: str, due: int) -> Timer:
        """A timer that will propose ``action`` at ``due`` if the row has not moved by then."""
        return Timer(row_id, name, action, self.rows[row_id].version, due)

    def fire(self, sink: EventSink, timer: Timer, *, step: str | None = None) -> StateRow | None:
        """Fire ``timer``: a no-op once the row moved past the version it was set at."""
        row = self.rows[timer.row_id]
        if row.version != timer.version:
            sink.gate(
                "timer",
                "stale",
                f"timer {timer.name} set at version {timer.version}, row at {row.version}",
                step=step,
                actor="timer",
                pattern=TAG,
                status="ok",
            )
            return None
        return self.propose(sink, timer.row_id, timer.version, timer.action, step=step, actor="timer")
