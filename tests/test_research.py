"""The research (fan-out) reference workload and its simulated model versions."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.research
from sdbctl.fixtures.research.agent import SOURCES
from sdbctl.sdb.agents import AgentError, load_agent
from sdbctl.sdb.providers import UnknownModel, resolve
from tests.helpers import action_digests, ground_truth, query_rows, record_run, run_events

assert sdbctl.fixtures.research.WORKLOAD.name == "research"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("research") / ".sdb"
    record_run(store, "research", "v1", model="sim:research@v1")
    return store


def test_thirty_questions_fan_out_fail_peers_and_compensate_writes(baseline: Path) -> None:
    events = run_events(baseline, "v1")
    assert len({e["session_id"] for e in events}) == 30
    terminal = Counter(e["name"] for e in events if e["kind"] == "state" and e["step"] == "terminal")
    assert sum(terminal.values()) == 30 and len(terminal) >= 2
    assert set(terminal) <= {
        "published",
        "published_partial",
        "rolled_back",
        "unpublished",
        "abandoned",
        "inconclusive",
    }
    assert {"P1", "P2"} <= {e["pattern"] for e in events}
    dispatches = [e for e in events if e["kind"] == "action" and e["name"].startswith("dispatch:")]
    assert dispatches and all(e["pattern"] == "P1" for e in dispatches)
    peer_errors = [e for e in events if e["kind"] == "error" and e["name"].startswith("peer:")]
    assert peer_errors and all(e["pattern"] == "P2" for e in peer_errors)
    assert any("did not answer" in json.loads(e["payload"])["message"] for e in peer_errors)
    compensations = [e for e in events if e["kind"] == "effect" and e["name"].startswith("compensate:")]
    assert compensations and all(e["pattern"] == "P2" for e in compensations)
    # the question is an input, the plan and the report cross the boundary
    names = Counter((e["kind"], e["name"]) for e in events)
    assert names[("input", "question")] == 30
    assert names[("action", "plan_research")] == 30
    assert names[("action", "publish_report")] == terminal["published"] + terminal["published_partial"]


def test_compensations_run_in_reverse_order_and_a_rollback_publishes_nothing(baseline: Path) -> None:
    events = run_events(baseline, "v1")
    sessions = {e["session_id"] for e in events if e["kind"] == "state" and e["name"] == "rolled_back"}
    assert sessions
    for sid in sessions:
        mine = [e for e in events if e["session_id"] == sid]
        written = [e["name"] for e in mine if e["kind"] == "effect" and e["name"].startswith("write_findings:")]
        undone = [e["name"].removeprefix("compensate:") for e in mine if e["name"].startswith("compensate:")]
        assert undone == list(reversed(written))
        assert not any(e["name"] == "publish_report" for e in mine)


def test_partial_results_go_on_and_the_report_cites_only_fetched_sources(baseline: Path) -> None:
    events = run_events(baseline, "v1")
    partial = {e["session_id"] for e in events if e["kind"] == "state" and e["name"] == "published_partial"}
    assert partial
    for sid in partial:
        mine = [e for e in events if e["session_id"] == sid]
        fetched = {
            e["name"].removeprefix("peer:") for e in mine if e["kind"] == "effect" and e["name"].startswith("peer:")
        }
        failed = {
            e["name"].removeprefix("peer:") for e in mine if e["kind"] == "error" and e["name"].startswith("peer:")
        }
        assert failed and fetched
        report = next(json.loads(e["payload"])["args"] for e in mine if e["name"] == "publish_report")
        assert set(report["sources"]) == fetched and "unavailable" in report["conclusion"]
        assert report["confidence"] == round(report["confidence"], 2)


def test_same_seed_twice_gives_identical_action_digests(baseline: Path) -> None:
    record_run(baseline, "research", "v1-again", model="sim:research@v1")
    first, second = action_digests(baseline, "v1"), action_digests(baseline, "v1-again")
    assert len(first) > 150 and first == second


def test_another_seed_asks_other_questions() -> None:
    workload = load_agent("research")
    assert [s.session_id for s in workload.sessions(10, 1, {})] != [s.session_id for s in workload.sessions(10, 0, {})]


def test_v2_drifts_on_the_same_questions_and_the_ground_truth_says_how(baseline: Path) -> None:
    record_run(baseline, "research", "v2", model="sim:research@v2")
    first, second = action_digests(baseline, "v1"), action_digests(baseline, "v2")
    assert [(s, q) for s, q, _ in first][:5] == [(s, q) for s, q, _ in second][:5]
    v1 = {(s, q): d for s, q, d in first}
    changed = {(s, q) for s, q, d in second if (s, q) in v1 and v1[(s, q)] != d}
    assert changed and len(changed) < len(second)
    truth = ground_truth(baseline, "v2")
    assert {"session_id", "step", "llm_seq", "prompt", "model", "changes", "rules"} <= set(truth[0])
    assert all(t["model"] == "sim:research@v2" for t in truth)
    fields = Counter(c["field"] for t in truth for c in t["changes"])
    assert fields["specialists"] > 0 and fields["subqueries"] > 0
    rules = Counter(rule for t in truth for rule in t["rules"])
    assert rules["v2: one extra base-comparison sub-query for above-base churn"] > 0
    assert {t["session_id"] for t in truth if t["changes"]} <= {s for s, _ in changed}


def test_prompt_plan_v2_changes_the_plan(tmp_path: Path) -> None:
    record_run(tmp_path, "research", "p2", sessions=20, prompts={"plan": "v2"})
    rows = query_rows(tmp_path, "SELECT payload FROM events WHERE kind = 'action' AND name = 'plan_research'")
    plans = [json.loads(r[0])["args"] for r in rows]
    assert len(plans) == 20
    assert all(len(p["specialists"]) <= 2 and len(p["subqueries"]) == 2 * len(p["specialists"]) for p in plans)
    prompts = {r[0] for r in query_rows(tmp_path, "SELECT DISTINCT prompt FROM events WHERE kind = 'llm'")}
    assert prompts == {"plan@v2", "synthesize@v1"}


def test_v3_cites_unfetched_sources_and_answers_malformed_and_the_boundary_rejects_it(tmp_path: Path) -> None:
    record_run(tmp_path, "research", "v3", sessions=100, model="sim:research@v3")
    statuses = Counter(
        (r[0], r[1])
        for r in query_rows(tmp_path, "SELECT name, status FROM events WHERE kind = 'action' AND status <> 'ok'")
    )
    assert statuses[("publish_report", "gated")] >= 1
    assert sum(n for (_, status), n in statuses.items() if status == "parse_failed") >= 1
    denials = query_rows(
        tmp_path, "SELECT payload FROM events WHERE kind = 'gate' AND name = 'sources:fetched' AND status <> 'ok'"
    )
    assert denials and all("never fetched" in r[0] for r in denials)
    confidences = [
        json.loads(r[0])["args"]["confidence"]
        for r in query_rows(tmp_path, "SELECT payload FROM events WHERE kind = 'action' AND name = 'publish_report'")
    ]
    assert confidences and all(c == round(c, 1) for c in confidences)


def test_the_simulator_reads_only_the_request(baseline: Path) -> None:
    """Every recorded request, asked again, is answered with the recorded response."""
    model = resolve("sim:research@v1")
    llm = [e["payload"] for e in run_events(baseline, "v1", payloads=True) if e["kind"] == "llm"][:40]

    async def again() -> list[dict[str, Any]]:
        return [(await model.complete(body["request"])).response for body in llm]

    assert llm and asyncio.run(again()) == [body["response"] for body in llm]


def test_noise_makes_a_version_disagree_with_itself_across_repeats(baseline: Path) -> None:
    request = next(
        e["payload"]["request"]
        for e in run_events(baseline, "v1", payloads=True)
        if e["kind"] == "llm" and e["name"] == "synthesize"
    )

    async def answers(spec: str) -> tuple[set[str], list[list[str]]]:
        model = resolve(spec)
        out, rules = set(), []
        for repeat in range(12):
            done = await model.complete(request, seed=0, repeat=repeat)
            out.add(done.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
            rules.append(list((done.truth or {}).get("rules", [])))
        return out, rules

    noisy, rules = asyncio.run(answers("sim:research@v1?noise=0.5"))
    assert len(noisy) > 1 and any("noise" in r for r in rules)
    quiet, _ = asyncio.run(answers("sim:research@v1"))
    assert len(quiet) == 1


def test_sessions_cycle_with_a_suffix_past_the_distinct_questions() -> None:
    workload = load_agent("research")
    items = list(workload.sessions(None, 0, {}))
    ids = [i.session_id for i in items]
    assert len(ids) == len(set(ids)) > 40
    more = list(workload.sessions(len(items) + 3, 0, {}))
    assert [i.session_id for i in more[len(items) :]] == [f"{i}-r2" for i in ids[:3]]
    first = items[0].data.question
    assert first.text.endswith("?") and 0 <= first.stats["churn_rate"] <= 1 and first.stats["customers"] >= 40
    assert set(SOURCES) == {"billing_analyst", "churn_analyst", "market_analyst", "support_analyst", "usage_analyst"}


def test_options_are_refused() -> None:
    workload = load_agent("research")
    assert workload.options({}) == {}
    with pytest.raises(AgentError):
        workload.options({"spine": "p5"})


@pytest.mark.parametrize("spec", ["sim:research@v9", "sim:research", "sim:research@v1?noise=2", "sim:research@v1?x=1"])
def test_unknown_model_specs_are_refused(spec: str) -> None:
    with pytest.raises(UnknownModel):
        resolve(spec)
