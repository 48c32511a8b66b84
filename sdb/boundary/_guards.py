"""Guards: the deterministic checks a pattern runs on a valid action before anything is committed.

A guard is any callable ``(action) -> GuardDecision``; a policy gate, a transition predicate, a
supervisor's check and a human approval are all guards. Their decisions are recorded as ``gate``
events, allowed or not, so the audit trail holds every check that was made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ValidAction:
    """An action that passed schema validation, in canonical form, with its digest."""

    name: str
    args: dict[str, Any]
    digest: int
    call_id: str | None = None
    critical: bool = False
    pure: bool = False


@dataclass(frozen=True)
class GuardDecision:
    """A guard's verdict: ``allow`` or not, which guard (``name``, e.g. ``policy:v7``), and why."""

    allow: bool
    name: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, name: str, reason: str | None = None, **detail: Any) -> GuardDecision:
        return cls(True, name, reason, detail)

    @classmethod
    def deny(cls, name: str, reason: str, **detail: Any) -> GuardDecision:
        return cls(False, name, reason, detail)


Guard = Callable[[ValidAction], GuardDecision | Awaitable[GuardDecision]]
