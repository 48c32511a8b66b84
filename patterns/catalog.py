"""What each pattern is, when to use it, how it fails, and what a divergence means for it.

The text behind ``sdbctl patterns list`` and ``sdbctl patterns show``; the patterns' own modules hold
the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdbctl.sdb.errors import SdbError


@dataclass(frozen=True)
class PatternInfo:
    tag: str
    name: str
    concern: str
    summary: str
    when: str
    failure_modes: str
    divergence: str
    module: str


CATALOG: dict[str, PatternInfo] = {
    p.tag: p
    for p in [
        PatternInfo(
            "P1",
            "hierarchical delegation",
            "coordination",
            "one owner, N specialists, deterministic merge",
            "A task splits into parts that need different expertise or tools, and one owner must answer for "
            "the result.",
            "The owner's plan drifts (other specialists, other sub-tasks); a specialist's answer changes and the "
            "merge silently follows; merging in arrival order makes the result depend on timing.",
            "The owner delegated differently (a changed dispatch action) or a specialist answered differently "
            "(a changed effect that changes the merge).",
            "sdbctl.patterns.p1_delegation",
        ),
        PatternInfo(
            "P2",
            "scatter-gather + saga",
            "coordination",
            "parallel fan-out; some peers fail; writes need compensation",
            "Several independent sources or systems are asked at once and the answer may go on without some of "
            "them; writes to several systems must be undone together when one fails.",
            "A failing peer is treated as an empty answer; a partial write is left behind because a compensation "
            "was missing or ran in the wrong order.",
            "Another set of peers answered, or the saga took another path: a write that now fails and the "
            "compensations after it, or a compensation that no longer happens.",
            "sdbctl.patterns.p2_saga",
        ),
        PatternInfo(
            "P3",
            "event-driven sequencing",
            "state",
            "an append-only log is the truth; consumers are commentary; idempotency keys",
            "Facts arrive from outside while an episode runs (product end-of-life, a merger), history must be "
            "replayable, and consumers may see an event twice.",
            "A consumer applies a redelivered event twice; an event without the model and prompt that produced "
            "it cannot be audited; state kept outside the log drifts from it.",
            "The log itself differs: another event appended, a field of an event changed, or events in another "
            "order — and every state folded from it with them.",
            "sdbctl.patterns.p3_event_log",
        ),
        PatternInfo(
            "P4",
            "supervisor + gate",
            "control",
            "restart what died, refuse what is out of policy before any side effect, audit all",
            "The agent has side effects that a policy bounds (discount caps, refund limits), and workers can die.",
            "A side effect happens before the check; the policy version that decided is not recorded; a worker "
            "is restarted without bound.",
            "The gate decided differently: an action that passed is now denied or the reverse (gate_changed), "
            "often the first sign that a model drifted toward the policy's edge.",
            "sdbctl.patterns.p4_supervisor",
        ),
        PatternInfo(
            "P5",
            "shared state machine",
            "state",
            "a versioned row; stateless workers propose (state, action) -> next by compare-and-swap; timers on "
            "the row; human_required is a state",
            "Long-running episodes with many workers touching one entity, legal transitions that can be written "
            "down, and deadlines.",
            "Two workers both apply a transition (no CAS); a stale timer fires after the row moved on; an illegal "
            "transition slips through because it was not in the table.",
            "Another path through the table: a different state entered at the same step (state_changed), or the "
            "same state reached by another action.",
            "sdbctl.patterns.p5_state_machine",
        ),
        PatternInfo(
            "P6",
            "human in the loop",
            "control",
            "kill switch, escalation, approval, throttling; approvals are recorded inputs",
            "Some decisions must be a person's (out-of-policy discounts, mergers, large refunds), and an operator "
            "must be able to stop all side effects at once.",
            "An approval given for one action is reused for another; a kill switch that only some paths check; "
            "a throttle per worker instead of per customer.",
            "A decision now needs a human where it did not (or the reverse), the human answered differently, or "
            "a throttle or kill switch now holds an action back. Approvals are reused in replay only for an "
            "identical action.",
            "sdbctl.patterns.p6_human",
        ),
    ]
}


def pattern(tag: str) -> PatternInfo:
    """The pattern with ``tag`` (``P5`` or ``p5``); an unknown one is a one-line error."""
    info = CATALOG.get(tag.upper())
    if info is None:
        raise SdbError(f"unknown pattern {tag!r}; patterns: {', '.join(CATALOG)}")
    return info
