"""The model interface: one async call from a request to a completion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sdbctl.sdb.errors import SdbError


class UnknownModel(SdbError):
    """A model spec no provider answers to."""


class ProviderError(Exception):
    """A model call that failed. ``retryable`` says whether asking again may help (429, 5xx,
    timeouts, connection errors); ``retry_after`` is the server's ``Retry-After`` in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        #: what went wrong, for summaries: "connection refused", "DNS", "TLS", "timeout", "HTTP 429" ...
        self.kind = kind or (f"HTTP {status}" if status else "error")


@dataclass(frozen=True)
class Completion:
    """A model's answer: the raw response (OpenAI chat-completions shape) and, for simulators only,
    the ground truth of what the simulated version changed and why — kept outside the response, so
    the differ never sees it."""

    response: dict[str, Any]
    latency_ms: float | None = None
    truth: dict[str, Any] | None = field(default=None)


class Provider(Protocol):
    """Anything that answers a chat-completions request."""

    spec: str

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        """Answer ``request``. ``seed`` and ``repeat`` reach simulators; real models ignore them."""
        ...
