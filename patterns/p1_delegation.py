"""P1 hierarchical delegation: one owner, N specialists, a deterministic merge.

The owner dispatches one task to every specialist and merges their answers in a fixed order
(specialist name), so the merged result does not depend on who answered first. Events: one
``action`` per dispatch (``dispatch:<specialist>``, actor ``supervisor``) and one ``effect`` per
answer (actor ``worker:<specialist>``), all tagged ``P1``.

Divergence here means the owner delegated differently (another specialist set, other task
arguments) or a specialist answered differently — a changed ``dispatch`` action, or a changed
answer that changes the merge.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.events import EventSink

TAG = "P1"
Specialist = Callable[[Mapping[str, Any]], Any | Awaitable[Any]]
Merge = Callable[[dict[str, Any]], Any]


def merge_sorted(answers: dict[str, Any]) -> dict[str, Any]:
    """The default merge: answers keyed by specialist, in name order."""
    return {name: answers[name] for name in sorted(answers)}


@dataclass
class Delegation:
    """An owner with its specialists and its merge."""

    specialists: Mapping[str, Specialist]
    merge: Merge = merge_sorted
    owner: str = "supervisor"

    async def run(self, sink: EventSink, task: Mapping[str, Any], *, step: str | None = None) -> Any:
        """Dispatch ``task`` to every specialist (in name order) and merge their answers."""
        answers: dict[str, Any] = {}
        for name in sorted(self.specialists):
            seq = sink.action(f"dispatch:{name}", dict(task), step=step, actor=self.owner, pattern=TAG)
            answer = self.specialists[name](task)
            if inspect.isawaitable(answer):
                answer = await answer
            sink.effect(f"dispatch:{name}", answer, parent=seq, step=step, actor=f"worker:{name}", pattern=TAG)
            answers[name] = answer
        merged = self.merge(answers)
        sink.state("merged", merged, step=step, actor=self.owner, pattern=TAG)
        return merged
