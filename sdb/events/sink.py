"""What the core writes events through: a protocol that the in-process recorder's ``Session`` meets.

``sdb`` cannot import ``recorders`` (arrows point down), so the boundary, the patterns and the replay
engine write to any object with these methods; ``recorders.sdk.Session`` is the usual one, and
:class:`NullSink` drops everything (for code run without recording).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class EventSink(Protocol):
    """One session's event writer. Every method records one event and returns its ``seq``."""

    session_id: str

    def input(
        self, name: str, payload: Any, *, step: str | None = ..., actor: str | None = ..., pattern: str | None = ...
    ) -> int: ...

    def llm(
        self,
        request: Any,
        response: Any,
        *,
        model: str,
        prompt: str | None = ...,
        step: str | None = ...,
        variables: Mapping[str, Any] | None = ...,
        name: str | None = ...,
        latency_ms: float | None = ...,
        tokens_in: int | None = ...,
        tokens_out: int | None = ...,
        parent: int | None = ...,
        actor: str | None = ...,
        pattern: str | None = ...,
    ) -> int: ...

    def action(
        self,
        name: str,
        args: Any,
        *,
        step: str | None = ...,
        status: str = ...,
        parent: int | None = ...,
        call_id: str | None = ...,
        error: Any = ...,
        actor: str | None = ...,
        pattern: str | None = ...,
    ) -> int: ...

    def gate(
        self,
        name: str,
        decision: Any,
        reason: str | None = ...,
        *,
        parent: int | None = ...,
        step: str | None = ...,
        status: str | None = ...,
        actor: str | None = ...,
        pattern: str | None = ...,
    ) -> int: ...

    def effect(
        self,
        name: str,
        result: Any,
        *,
        parent: int | None = ...,
        step: str | None = ...,
        status: str = ...,
        actor: str | None = ...,
        pattern: str | None = ...,
    ) -> int: ...

    def state(
        self,
        name: str,
        payload: Any,
        *,
        step: str | None = ...,
        parent: int | None = ...,
        actor: str | None = ...,
        pattern: str | None = ...,
    ) -> int: ...

    def error(
        self,
        name: str,
        message: str,
        *,
        detail: Any = ...,
        step: str | None = ...,
        parent: int | None = ...,
        actor: str | None = ...,
        pattern: str | None = ...,
    ) -> int: ...


class NullSink:
    """A sink that records nothing; ``seq`` still counts, so parent links stay meaningful."""

    def __init__(self, session_id: str = "null") -> None:
        self.session_id = session_id
        self._seq = 0

    def _next(self, *args: Any, **kwargs: Any) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    input = llm = action = gate = effect = state = error = _next
