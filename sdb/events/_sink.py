"""What the core writes events through: a protocol that the in-process recorder's ``Session`` meets.

``sdb`` cannot import ``recorders`` (arrows point down), so the boundary, the patterns and the replay
engine write to any object with these methods; ``recorders.sdk.Session`` is the usual one, and
:class:`MemorySink` keeps events in memory (tests, dry runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sdbctl.sdb.events._kinds import gate_status, llm_name


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


class MemorySink:
    """A sink that keeps events as dicts in memory (tests, dry runs). Payloads are kept as given."""

    def __init__(self, session_id: str = "memory") -> None:
        self.session_id = session_id
        self.events: list[dict[str, Any]] = []

    def _add(self, kind: str, name: str, body: dict[str, Any], kw: dict[str, Any]) -> int:
        seq = len(self.events)
        status = kw.pop("status", None) or "ok"
        self.events.append({"seq": seq, "kind": kind, "name": name, "status": status, **body, **kw})
        return seq

    def input(self, name: str, payload: Any, **kw: Any) -> int:
        return self._add("input", name, {"payload": payload}, kw)

    def llm(self, request: Any, response: Any, **kw: Any) -> int:
        prompt = kw.get("prompt")
        name = llm_name(kw.pop("name", None), None if prompt is None else str(prompt))
        return self._add("llm", name, {"request": request, "response": response}, kw)

    def action(self, name: str, args: Any, **kw: Any) -> int:
        return self._add("action", name, {"args": args}, kw)

    def gate(self, name: str, decision: Any, reason: str | None = None, **kw: Any) -> int:
        if kw.get("status") is None:
            kw["status"] = gate_status(decision)
        return self._add("gate", name, {"decision": decision, "reason": reason}, kw)

    def effect(self, name: str, result: Any, **kw: Any) -> int:
        return self._add("effect", name, {"result": result}, kw)

    def state(self, name: str, payload: Any, **kw: Any) -> int:
        return self._add("state", name, {"payload": payload}, kw)

    def error(self, name: str, message: str, **kw: Any) -> int:
        kw["status"] = "error"
        return self._add("error", name, {"message": message}, kw)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]
