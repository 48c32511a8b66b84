"""A crossing of the boundary: what was proposed, what the verifier said, what was committed.

A crossing that did not commit carries a :class:`Rejection`, which the pattern hands back to the
proposer as a rejection (a tool message that says so) — never as a success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdbctl.sdb.boundary._guards import GuardDecision, ValidAction


class StopSession(Exception):
    """Raised by a commit policy to end the episode here (a closed-loop replay reached an action with no
    recorded effect); the boundary lets it through instead of recording it as a handler error."""


EXECUTE = object()  # returned by a commit callable: run the action's own handler after all


@dataclass(frozen=True)
class Rejection:
    """Why an action was not committed: ``parse_failed``, ``invalid`` or ``gated``, with details."""

    status: str
    reason: str
    action: str | None = None
    call_id: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    guard: str | None = None

    def as_tool_message(self) -> dict[str, Any]:
        """The rejection as the OpenAI ``tool`` message that answers the call (or a user message)."""
        text = f"REJECTED ({self.status}): {self.reason}"
        if self.errors:
            text += " | " + "; ".join(f"{e['path']}: {e['message']}" for e in self.errors)
        if self.call_id:
            return {"role": "tool", "tool_call_id": self.call_id, "content": text}
        return {"role": "user", "content": text}


@dataclass(frozen=True)
class Crossing:
    """The outcome of one proposed action at the boundary, with the seq of each event it wrote."""

    status: str
    action: ValidAction | None
    action_seq: int
    llm_seq: int | None = None
    decisions: tuple[GuardDecision, ...] = ()
    effect: Any = None
    effect_seq: int | None = None
    rejection: Rejection | None = None
    error: str | None = None

    @property
    def committed(self) -> bool:
        return self.status == "ok" and self.error is None

    @property
    def name(self) -> str | None:
        return self.action.name if self.action else (self.rejection.action if self.rejection else None)
