"""P2 scatter-gather + saga: parallel fan-out where some peers fail, and writes that get undone.

``scatter_gather`` runs peers concurrently and keeps going when some fail: the failures are
recorded as ``error`` events and the answers that arrived are returned. A :class:`Saga` runs write
steps in order; when one fails, the steps already completed are compensated in reverse order, each
compensation an ``effect`` named ``compensate:<step>``. All events are tagged ``P2``.

Divergence here means another set of peers answered, or a saga took another path: a write that now
fails (and the compensations that follow), or a compensation that no longer happens.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.events import EventSink

TAG = "P2"
Peer = Callable[[], Any | Awaitable[Any]]


async def _call(fn: Callable[[], Any]) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


async def scatter_gather(
    sink: EventSink, peers: Mapping[str, Peer], *, step: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Ask every peer at once; returns (answers, failures), each keyed by peer name."""
    names = sorted(peers)
    results = await asyncio.gather(*(_call(peers[n]) for n in names), return_exceptions=True)
    answers: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            failures[name] = f"{type(result).__name__}: {result}"
            sink.error(f"peer:{name}", failures[name], step=step, actor=f"worker:{name}", pattern=TAG)
        else:
            answers[name] = result
            sink.effect(f"peer:{name}", result, step=step, actor=f"worker:{name}", pattern=TAG)
    return answers, failures


@dataclass(frozen=True)
class SagaStep:
    """A write and its compensation."""

    name: str
    do: Callable[[], Any]
    undo: Callable[[], Any]


@dataclass
class SagaResult:
    completed: list[str]
    failed: str | None
    compensated: list[str]

    @property
    def ok(self) -> bool:
        return self.failed is None


class Saga:
    """Run write steps in order; on the first failure, compensate completed steps in reverse."""

    def __init__(self, steps: Sequence[SagaStep]) -> None:
        self.steps = list(steps)

    async def run(self, sink: EventSink, *, step: str | None = None) -> SagaResult:
        completed: list[SagaStep] = []
        for s in self.steps:
            seq = sink.action(s.name, {}, step=step, pattern=TAG)
            try:
                result = await _call(s.do)
            except Exception as exc:
                sink.error(s.name, f"{type(exc).__name__}: {exc}", parent=seq, step=step, pattern=TAG)
                undone = []
                for done in reversed(completed):
                    undo_result = await _call(done.undo)
                    sink.effect(f"compensate:{done.name}", undo_result, parent=seq, step=step, pattern=TAG)
                    undone.append(done.name)
                return SagaResult([c.name for c in completed], s.name, undone)
            sink.effect(s.name, result, parent=seq, step=step, pattern=TAG)
            completed.append(s)
        return SagaResult([c.name for c in completed], None, [])
