"""P6 human in the loop: approval, escalation, kill switch and throttling.

A :class:`HumanLoop` asks a human (in the workloads, a seeded simulated human) and records the
question as a ``gate`` ``escalate`` event and the answer as an ``input`` event (actor ``human``):
in a replay, a recorded approval is reused only for an identical action. A :class:`KillSwitch`,
tripped by an authorised principal, denies every side effect from then on. A :class:`Throttle` caps
actions per key and window of (simulated) time. Guards and events are tagged ``P6``.

Divergence here means a decision that now needs a human where it did not (or the reverse), another
answer to the same question, or a throttle or kill switch that now holds an action back.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sdbctl.sdb.boundary import GuardDecision, ValidAction
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import EventSink

TAG = "P6"
Decider = Callable[[Mapping[str, Any]], Any | Awaitable[Any]]


class Unauthorised(SdbError):
    """A principal not allowed to do this."""


class HumanLoop:
    """Escalations to a human decider; every answer is a recorded input."""

    def __init__(self, decider: Decider, name: str = "human") -> None:
        self.decider = decider
        self.name = name

    async def ask(
        self, sink: EventSink, question: Mapping[str, Any], *, step: str | None = None, parent: int | None = None
    ) -> Any:
        """Escalate ``question``; returns the human's decision, recorded as an ``input`` event."""
        sink.gate(
            "escalate",
            "escalate",
            str(question.get("reason", "needs a human")),
            parent=parent,
            step=step,
            pattern=TAG,
            status="ok",
        )
        answer = self.decider(question)
        if inspect.isawaitable(answer):
            answer = await answer
        sink.input(
            "human_decision", {"question": dict(question), "answer": answer}, step=step, actor=self.name, pattern=TAG
        )
        return answer


class KillSwitch:
    """Once tripped by an authorised principal, denies every side effect."""

    def __init__(self, authorised: Iterable[str]) -> None:
        self.authorised = set(authorised)
        self.tripped_by: str | None = None

    def trip(self, sink: EventSink, principal: str, reason: str) -> None:
        if principal not in self.authorised:
            sink.gate("kill_switch", "deny", f"{principal} may not trip the kill switch", actor=principal, pattern=TAG)
            raise Unauthorised(f"{principal} is not authorised to trip the kill switch")
        self.tripped_by = principal
        sink.input("kill_switch", {"principal": principal, "reason": reason}, actor=principal, pattern=TAG)

    def guard(self, action: ValidAction) -> GuardDecision:
        if self.tripped_by is not None:
            return GuardDecision.deny("kill_switch", f"kill switch tripped by {self.tripped_by}")
        return GuardDecision.ok("kill_switch")


class Throttle:
    """At most ``limit`` actions per key per ``window`` units of (simulated) time."""

    def __init__(self, limit: int, window: int, clock: Callable[[], int], name: str = "throttle") -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.name = name
        self._seen: dict[str, list[int]] = defaultdict(list)

    def guard(self, key: str) -> Callable[[ValidAction], GuardDecision]:
        def check(action: ValidAction) -> GuardDecision:
            now = self.clock()
            recent = [t for t in self._seen[key] if now - t < self.window]
            if len(recent) >= self.limit:
                self._seen[key] = recent
                return GuardDecision.deny(self.name, f"{key}: {self.limit} actions per {self.window} already used")
            recent.append(now)
            self._seen[key] = recent
            return GuardDecision.ok(self.name)

        return check
