"""P3 event-driven sequencing: an append-only log is the truth; consumers are commentary.

Every :class:`LogEvent` carries an id (the idempotency key) and the model version and prompt that
produced it. Appending writes an ``input`` event tagged ``P3``. A :class:`LogConsumer` handles each
id at most once — a redelivered event is recorded as a ``gate`` ``dedupe`` decision and ignored —
so replaying the log cannot apply an event twice. State is whatever the fold of the log says.

Divergence here means the log itself differs — another event appended, a field of an event changed,
or events in another order — which changes every state folded from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sdbctl.sdb.events import EventSink

TAG = "P3"


@dataclass(frozen=True)
class LogEvent:
    """One entry of the log. ``id`` is the idempotency key."""

    id: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    prompt: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "data": self.data, "model": self.model, "prompt": self.prompt}


class EventLog:
    """An append-only log of :class:`LogEvent`; ids are unique."""

    def __init__(self) -> None:
        self._events: list[LogEvent] = []
        self._ids: set[str] = set()

    def append(self, sink: EventSink, event: LogEvent, *, step: str | None = None, actor: str | None = None) -> int:
        """Append ``event``; an id already in the log is refused (the log never rewrites history)."""
        if event.id in self._ids:
            raise ValueError(f"event id {event.id!r} is already in the log")
        self._events.append(event)
        self._ids.add(event.id)
        return sink.input(event.type, event.as_dict(), step=step, actor=actor, pattern=TAG)

    def __iter__(self) -> Iterator[LogEvent]:
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)

    def fold(self, initial: Any, reducer: Callable[[Any, LogEvent], Any]) -> Any:
        """The state the log implies: ``reducer`` applied to every event in order."""
        state = initial
        for event in self._events:
            state = reducer(state, event)
        return state


class LogConsumer:
    """Handles each log event id at most once."""

    def __init__(self, name: str, handler: Callable[[LogEvent], Any]) -> None:
        self.name = name
        self.handler = handler
        self.seen: set[str] = set()

    def deliver(self, sink: EventSink, event: LogEvent, *, step: str | None = None) -> bool:
        """Handle ``event`` unless its id was handled before; returns whether it was handled."""
        if event.id in self.seen:
            sink.gate(
                "dedupe",
                "skip",
                f"event {event.id} already handled by {self.name}",
                step=step,
                actor=f"consumer:{self.name}",
                pattern=TAG,
                status="ok",
            )
            return False
        self.seen.add(event.id)
        self.handler(event)
        return True
