"""The support-triage reference workload: recording, P4/P6 behaviour, determinism, drift and truth."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from sdbctl.fixtures.support_triage import TriageWorkload
from sdbctl.fixtures.support_triage.agent import make_ticket, simulated_human
from sdbctl.fixtures.telco import customers
from sdbctl.sdb.agents import AgentError, load_agent
from sdbctl.sdb.providers import UnknownModel, resolve
from tests.helpers import action_digests, ground_truth, record_run, run_events

TERMINAL = {"refunded", "resolved", "escalated"}


def test_records_30_tickets_through_the_p4_gate_and_the_p6_human(store: Path) -> None:
    summary = record_run(store, "support-triage", "t30")
    assert summary.sessions == 30
    assert set(summary.terminal_states) <= TERMINAL
    assert len(summary.terminal_states) >= 2
    events = run_events(store, "t30", payloads=True)
    assert {"P4", "P6"} <= {e["pattern"] for e in events}
    assert {e["session_id"] for e in events} == {f"TKT-{i:05d}" for i in range(1, 31)}

    # every session ends in exactly one terminal state event, and they add up to the summary
    terminal = [e for e in events if e["kind"] == "state" and e["name"] in TERMINAL]
    assert sorted(e["session_id"] for e in terminal) == sorted({e["session_id"] for e in events})
    assert Counter(e["name"] for e in terminal) == summary.terminal_states

    # a refund over the limit is gated by the P4 policy, and the rejection is handed back once
    gated = [e for e in events if e["kind"] == "action" and e["name"] == "issue_refund" and e["status"] == "gated"]
    assert gated
    for action in gated:
        denials = [
            e
            for e in events
            if e["session_id"] == action["session_id"] and e["kind"] == "gate" and e["parent"] == action["seq"]
        ]
        assert any(e["name"].startswith("policy:") and e["payload"]["decision"] == "deny" for e in denials)
        assert action["payload"]["args"]["amount"] > 50
        retry = [
            e
            for e in events
            if e["session_id"] == action["session_id"] and e["kind"] == "llm" and e["step"] == action["step"]
        ]
        assert len(retry) == 2
        assert "REJECTED (gated)" in json.dumps(retry[1]["payload"])

    # the simulated human's answers are recorded inputs (P6), each after an escalation gate
    human = [e for e in events if e["kind"] == "input" and e["actor"] == "human"]
    assert human
    assert {e["pattern"] for e in human} == {"P6"}
    for answer in human:
        escalations = [
            e
            for e in events
            if e["session_id"] == answer["session_id"] and e["kind"] == "gate" and e["name"] == "escalate"
        ]
        assert escalations and escalations[0]["seq"] < answer["seq"]

    # the P4 supervisor restarts the flaky lookup worker at most twice
    restarts = Counter(e["session_id"] for e in events if e["kind"] == "error" and e["name"] == "worker:lookup")
    assert restarts and max(restarts.values()) <= 3
    for session, failures in restarts.items():
        found = any(e["session_id"] == session and e["name"] == "lookup_account" for e in events)
        assert found == (failures < 3), session


def test_same_seed_gives_identical_action_digests(store: Path) -> None:
    record_run(store, "support-triage", "a", seed=7)
    record_run(store, "support-triage", "b", seed=7)
    record_run(store, "support-triage", "c", seed=8)
    a, b, c = (action_digests(store, r) for r in ("a", "b", "c"))
    assert a and a == b
    assert a != c  # another seed derives other tickets


def test_v2_diverges_from_v1_and_the_truth_says_why(store: Path) -> None:
    record_run(store, "support-triage", "v1", model="sim:triage@v1")
    record_run(store, "support-triage", "v2", model="sim:triage@v2")
    per_session: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for run in ("v1", "v2"):
        for session, _, digest in action_digests(store, run):
            per_session[session][run].append(digest)
    differ = [s for s, runs in per_session.items() if runs["v1"] != runs["v2"]]
    assert differ
    assert len(differ) < len(per_session)  # drift, not a different workload

    assert all(not r["changes"] for r in ground_truth(store, "v1"))
    changed = [r for r in ground_truth(store, "v2") if r["changes"]]
    assert changed
    assert all(r["model"] == "sim:triage@v2" for r in changed)
    assert {rule for r in changed for rule in r["rules"]} & {
        "v2: refund requests routed to the account queue",
        "v2: refund rounded down to a whole unit",
    }
    assert {c["field"] for r in changed for c in r["changes"]} & {"queue", "amount"}
    assert {r["session_id"] for r in changed} <= set(differ)


def test_prompt_triage_v2_caps_refunds(store: Path) -> None:
    record_run(store, "support-triage", "p1", sessions=60)
    record_run(store, "support-triage", "p2", sessions=60, prompts={"triage": "v2"})

    def amounts(run: str) -> list[float]:
        return [
            float(e["payload"]["args"]["amount"])
            for e in run_events(store, run, payloads=True)
            if e["kind"] == "action" and e["name"] == "issue_refund"
        ]

    assert max(amounts("p1")) > 30
    assert amounts("p2") and max(amounts("p2")) <= 30
    prompts = {e["prompt"] for e in run_events(store, "p2", payloads=True) if e["kind"] == "llm"}
    assert "triage@v2" in prompts and "triage@v1" not in prompts


def test_unknown_version_and_parameters_are_refused() -> None:
    with pytest.raises(UnknownModel, match="no such version"):
        resolve("sim:triage@v9")
    with pytest.raises(UnknownModel):
        resolve("sim:triage@v1?temperature=1")
    assert resolve("sim:triage@v3?noise=0.2").spec == "sim:triage@v3?noise=0.2"


def test_takes_no_options_and_is_registered() -> None:
    workload = load_agent("support-triage")
    assert isinstance(workload, TriageWorkload)
    assert workload.options({}) == {}
    with pytest.raises(AgentError, match="no options"):
        workload.options({"spine": "p5"})


def test_tickets_are_seeded_from_the_real_customers() -> None:
    workload = TriageWorkload()
    first = list(workload.sessions(20, 0, {}))
    assert [s.session_id for s in first] == [f"TKT-{i:05d}" for i in range(1, 21)]
    assert [s.data for s in workload.sessions(20, 0, {})] == [s.data for s in first]
    assert [s.data.message for s in workload.sessions(20, 1, {})] != [s.data.message for s in first]
    for c, item in zip(customers(limit=20), first, strict=True):
        ticket = item.data
        assert ticket.customer == c
        if ticket.topic == "double_charge":
            assert c.payment_method == "Electronic check"
            assert 0 < ticket.disputed_amount <= c.monthly_charges
        if ticket.topic == "slow_fiber":
            assert (c.internet_service, c.tech_support) == ("Fiber optic", "No")
    assert make_ticket(next(customers(limit=1)), 0, 0) == first[0].data


def test_simulated_human_policy() -> None:
    review = {"kind": "refund_review", "amount": 50.0, "monthly_charges": 80.0, "tenure_months": 12, "draw": 0.9}
    assert simulated_human(review)["decision"] == "approve"
    assert simulated_human({**review, "tenure_months": 2})["decision"] == "take_over"
    assert simulated_human({**review, "tenure_months": 2, "draw": 0.3})["decision"] == "approve"
    assert simulated_human({**review, "amount": 125.0})["decision"] == "take_over"
    angry = {"kind": "angry_customer", "action": "reply", "draw": 0.59}
    assert simulated_human(angry)["decision"] == "approve"
    assert simulated_human({**angry, "draw": 0.61})["decision"] == "take_over"
    assert simulated_human({"kind": "lookup_failed"})["decision"] == "take_over"


def _request(message: str, tenure: int = 3) -> dict[str, Any]:
    workload = TriageWorkload()
    variables = {
        "ticket_id": "TKT-00001",
        "customer_id": "0000-TEST",
        "contract": "Month-to-month",
        "tenure_months": tenure,
        "monthly_charges": "80.00",
        "internet_service": "Fiber optic",
        "tech_support": "No",
        "payment_method": "Electronic check",
        "message": message,
    }
    tools = [
        {"type": "function", "function": {"name": "route_ticket", "description": "", "parameters": {}}},
    ]
    return {"messages": workload.prompts.render("classify@v1", variables), "tools": tools, "temperature": 0}


def _route(model: str, request: dict[str, Any], repeat: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    done = asyncio.run(resolve(model).complete(request, seed=0, repeat=repeat))
    call = done.response["choices"][0]["message"]["tool_calls"][0]["function"]
    return json.loads(call["arguments"]), done.truth or {}


def test_simulator_reads_only_the_request() -> None:
    message = "I was charged twice again: 40.00 taken two times. I am still waiting for the refund."
    upset = _request(message)
    args, truth = _route("sim:triage@v1", upset)
    assert (args["queue"], args["sentiment"], args["priority"]) == ("billing", "upset", "high")
    assert truth["changes"] == []
    assert _route("sim:triage@v1", upset) == (args, truth)
    args2, truth2 = _route("sim:triage@v2", upset)
    assert (args2["queue"], args2["priority"]) == ("account", "urgent")
    assert {c["field"] for c in truth2["changes"]} == {"queue", "priority"}
    assert _route("sim:triage@v2", _request(message, tenure=30))[0]["priority"] == "high"
    angry, _ = _route("sim:triage@v1", _request("This is unacceptable!!! My DSL line keeps dropping."))
    assert (angry["queue"], angry["sentiment"], angry["priority"]) == ("technical", "angry", "urgent")


def test_noise_makes_the_model_disagree_with_itself() -> None:
    request = _request("Hello, my DSL line keeps dropping several times a day. Is there an outage?")
    clean = _route("sim:triage@v1", request)[0]
    noisy = [_route("sim:triage@v1?noise=1", request, repeat=r) for r in range(6)]
    assert any(args != clean for args, _ in noisy)
    for args, truth in noisy:
        assert "noise" in truth["rules"]
        assert [c["field"] for c in truth["changes"]] == (["priority"] if args != clean else [])
    assert _route("sim:triage@v1?noise=1", request, repeat=3) == noisy[3]
