"""The six patterns, each on the behaviour that defines it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sdbctl.fixtures import DATA_DIR
from sdbctl.patterns import (
    CasConflict,
    Delegation,
    EventLog,
    HumanLoop,
    IllegalTransition,
    KillSwitch,
    LogConsumer,
    LogEvent,
    PolicyGate,
    Saga,
    SagaStep,
    StateMachine,
    Supervisor,
    Throttle,
    load_policy,
    scatter_gather,
)
from sdbctl.patterns.p6_human import Unauthorised
from sdbctl.sdb.boundary import Boundary, ValidAction
from sdbctl.sdb.events import MemorySink


def offer(pct: float) -> ValidAction:
    return ValidAction("propose_offer", {"discount_pct": pct}, 0)


def test_p1_merge_is_deterministic_whatever_the_answer_order() -> None:
    sink = MemorySink()

    async def slow(task: Any) -> str:
        await asyncio.sleep(0.01)  # answers after the other: the merge's order must not follow arrival
        return "slow"

    merged = asyncio.run(Delegation({"zeta": lambda t: "z", "alpha": slow}).run(sink, {"id": 1}))
    assert list(merged) == ["alpha", "zeta"]
    assert [e["name"] for e in sink.of("action")] == ["dispatch:alpha", "dispatch:zeta"]
    assert {e["pattern"] for e in sink.events} == {"P1"}


def test_p2_scatter_gather_keeps_answers_when_peers_fail() -> None:
    sink = MemorySink()

    def broken() -> None:
        raise TimeoutError("network peer timed out")

    answers, failures = asyncio.run(scatter_gather(sink, {"usage": lambda: 1, "network": broken}))
    assert answers == {"usage": 1} and "TimeoutError" in failures["network"]
    assert [e["kind"] for e in sink.events] == ["error", "effect"]


def test_p2_saga_compensates_completed_writes_in_reverse_order() -> None:
    sink = MemorySink()
    log: list[str] = []

    def fail() -> None:
        raise RuntimeError("billing write refused")

    steps = [
        SagaStep("write_usage", lambda: log.append("usage"), lambda: log.append("undo usage")),
        SagaStep("write_network", lambda: log.append("network"), lambda: log.append("undo network")),
        SagaStep("write_billing", fail, lambda: log.append("undo billing")),
    ]
    result = asyncio.run(Saga(steps).run(sink))
    assert not result.ok and result.failed == "write_billing"
    assert result.compensated == ["write_network", "write_usage"]
    assert log == ["usage", "network", "undo network", "undo usage"]
    assert [e["name"] for e in sink.of("effect")][-2:] == ["compensate:write_network", "compensate:write_usage"]


def test_p3_duplicate_event_is_ignored_and_log_refuses_reused_ids() -> None:
    sink = MemorySink()
    log = EventLog()
    handled: list[str] = []
    consumer = LogConsumer("renewal", lambda e: handled.append(e.id))
    event = LogEvent("e-1", "product_eol", {"product": "DSL"}, model="sim:renewal@v1", prompt="offer@v1")
    log.append(sink, event)
    assert consumer.deliver(sink, event) is True
    assert consumer.deliver(sink, event) is False
    assert handled == ["e-1"]
    assert sink.of("gate")[0]["name"] == "dedupe"
    assert sink.of("input")[0]["payload"]["model"] == "sim:renewal@v1"
    with pytest.raises(ValueError, match="already in the log"):
        log.append(sink, event)
    assert log.fold(0, lambda n, e: n + 1) == 1


def test_p4_gate_denies_with_reason_and_honours_overrides() -> None:
    gate = PolicyGate(load_policy(DATA_DIR / "renewal_policy.yaml"))
    assert gate.name == "policy:v7"
    denied = gate.guard("C-999")(offer(35))
    assert not denied.allow and denied.reason == "discount 35% over the 30% cap of policy v7"
    assert gate.guard("C-001")(offer(35)).allow  # Acme's override is 35
    warned = gate.guard(None)(offer(25))
    assert warned.allow and warned.reason is not None and warned.reason.startswith("warn")


def test_p4_supervisor_restarts_a_bounded_number_of_times() -> None:
    sink = MemorySink()
    calls: list[int] = []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 2:
            raise ConnectionError("worker died")
        return "done"

    assert asyncio.run(Supervisor("scorer", max_restarts=2).run(sink, flaky)) == "done"
    assert calls == [0, 1, 2] and len(sink.of("error")) == 2
    with pytest.raises(ConnectionError):
        asyncio.run(Supervisor("scorer", max_restarts=1).run(MemorySink(), lambda a: flaky(-5)))


def machine() -> StateMachine:
    return StateMachine(
        {
            ("open", "score"): "scored",
            ("scored", "offer"): "offer_sent",
            ("scored", "escalate"): "human_required",
            ("offer_sent", "expire"): "expired",
            ("human_required", "approve"): "offer_sent",
        },
        initial="open",
    )


def test_p5_cas_conflict_changes_nothing() -> None:
    sink = MemorySink()
    sm = machine()
    sm.create(sink, "c-1")
    sm.propose(sink, "c-1", 1, "score")
    with pytest.raises(CasConflict):
        sm.propose(sink, "c-1", 1, "score")  # a second worker read version 1 too
    assert (sm.rows["c-1"].state, sm.rows["c-1"].version) == ("scored", 2)
    assert [e["name"] for e in sink.of("state")] == ["open", "scored"]
    assert sink.of("gate")[0]["name"] == "cas"


def test_p5_only_legal_transitions_and_human_required_is_a_state() -> None:
    sink = MemorySink()
    sm = machine()
    sm.create(sink, "c-1")
    with pytest.raises(IllegalTransition):
        sm.propose(sink, "c-1", 1, "offer")
    sm.propose(sink, "c-1", 1, "score")
    sm.propose(sink, "c-1", 2, "escalate")
    assert sm.rows["c-1"].state == "human_required"
    sm.propose(sink, "c-1", 3, "approve")
    assert [e["name"] for e in sink.of("state")] == ["open", "scored", "human_required", "offer_sent"]


def test_p5_stale_timer_is_a_no_op() -> None:
    sink = MemorySink()
    sm = machine()
    sm.create(sink, "c-1")
    sm.propose(sink, "c-1", 1, "score")
    stale = sm.set_timer("c-1", "score_expiry", "expire", due=10)  # set at version 2
    sm.propose(sink, "c-1", 2, "offer")  # the row moves on to version 3
    expiry = sm.set_timer("c-1", "offer_expiry", "expire", due=30)
    assert (stale.version, expiry.version) == (2, 3)
    assert sm.fire(sink, stale) is None and sm.rows["c-1"].state == "offer_sent"
    assert sink.of("gate")[-1]["decision"] == "stale"
    fired = sm.fire(sink, expiry)
    assert fired is not None and fired.state == "expired"


def test_p6_kill_switch_stops_side_effects() -> None:
    sink = MemorySink()
    switch = KillSwitch(["role:director_ai"])
    boundary = Boundary()
    sent: list[float] = []

    @boundary.action
    def propose_offer(discount_pct: float) -> str:
        sent.append(discount_pct)
        return "sent"

    answer = {
        "choices": [
            {
                "message": {
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "propose_offer", "arguments": '{"discount_pct": 10}'}}
                    ]
                }
            }
        ]
    }
    asyncio.run(boundary.cross(sink, answer, llm_seq=None, guards=[switch.guard]))
    with pytest.raises(Unauthorised):
        switch.trip(sink, "role:intern", "panic")
    switch.trip(sink, "role:director_ai", "incident 42")
    (after,) = asyncio.run(boundary.cross(sink, answer, llm_seq=None, guards=[switch.guard]))
    assert sent == [10.0] and after.status == "gated" and after.rejection is not None
    assert "kill switch tripped by role:director_ai" in after.rejection.reason


def test_p6_throttle_holds_and_releases_with_time() -> None:
    now = [0]
    throttle = Throttle(limit=2, window=60, clock=lambda: now[0])
    guard = throttle.guard("tenant-1")
    assert [guard(offer(1)).allow for _ in range(3)] == [True, True, False]
    assert throttle.guard("tenant-2")(offer(1)).allow
    now[0] = 61
    assert guard(offer(1)).allow


def test_p6_human_decisions_are_recorded_inputs() -> None:
    sink = MemorySink()
    human = HumanLoop(lambda q: {"approve": q["discount_pct"] <= 35})
    assert asyncio.run(human.ask(sink, {"reason": "discount_over_policy", "discount_pct": 32})) == {"approve": True}
    (decision,) = sink.of("input")
    assert decision["actor"] == "human" and decision["pattern"] == "P6"
    assert decision["payload"]["answer"] == {"approve": True}
