"""Pacing model calls: a requests-per-minute limiter and retries with backoff that honour Retry-After."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sdbctl.sdb.providers import ProviderError

T = TypeVar("T")


class Limiter(Protocol):
    """What spaces model calls: this process's :class:`RateLimiter`, or one shared by many workers."""

    async def wait(self) -> None: ...


class RateLimiter:
    """At most ``rpm`` calls per minute, spaced evenly (a token bucket of depth 1); None: no limit."""

    def __init__(self, rpm: float | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0

    def reserve(self) -> float:
        """Take the next call slot; returns how long the caller waits for it (no await inside, so
        callers on one event loop, or of one Ray actor, never take the same slot)."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval
        return start - now

    async def wait(self) -> None:
        pause = self.reserve()
        if pause > 0:
            await asyncio.sleep(pause)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins when it asks for longer."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.cap, self.base * 2**attempt))
        return max(backoff, min(retry_after, self.cap * 4)) if retry_after is not None else backoff


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    limiter: Limiter,
    timeout: float,
    on_retry: Callable[[int, ProviderError, float], None] | None = None,
) -> T:
    """``call()`` under the rate limit and a per-call timeout, retried while the error is retryable."""
    for attempt in range(policy.attempts):
        await limiter.wait()
        try:
            return await asyncio.wait_for(call(), timeout)
        except TimeoutError:
            error = ProviderError(f"no answer within {timeout:g} s", retryable=True, kind="timeout")
        except ProviderError as exc:
            error = exc
        if not error.retryable or attempt == policy.attempts - 1:
            raise error
        pause = policy.delay(attempt, error.retry_after)
        if on_retry is not None:
            on_retry(attempt, error, pause)
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")
