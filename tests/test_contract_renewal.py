"""The 90-day contract-renewal reference workload and its simulated model versions."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.providers import UnknownModel, resolve
from sdbctl.sdb.store import Store
from tests.helpers import query_rows, record_run

sdbctl.fixtures.workloads.register_all()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("renewal") / ".sdb"
    record_run(store, "contract-renewal", "v1", sessions=100, model="sim:renewal@v1")
    return store


def test_hundred_customers_show_every_pattern_a_gated_discount_and_every_terminal_state(baseline: Path) -> None:
    tags = {r[0] for r in query_rows(baseline, "SELECT DISTINCT pattern FROM events WHERE run_id = 'v1'")}
    assert {"P1", "P2", "P3", "P4", "P5", "P6"} <= tags
    gated = query_rows(
        baseline,
        "SELECT count(*) FROM events WHERE run_id = 'v1' AND kind = 'action' "
        "AND name = 'propose_offer' AND status = 'gated'",
    )
    assert gated[0][0] >= 1
    reasons = query_rows(
        baseline, "SELECT payload FROM events WHERE kind = 'gate' AND name = 'policy:v7' AND status = 'gated'"
    )
    assert any("over the 30% cap" in r[0] for r in reasons)
    terminal = {
        r[0]
        for r in query_rows(
            baseline, "SELECT name FROM events WHERE run_id = 'v1' AND kind = 'state' AND step = 'day-000/terminal'"
        )
    }
    assert terminal == {"renewed", "restructured", "churned"}
    manifest = Store.open(baseline).manifest("v1")
    assert manifest.agent == "contract-renewal" and manifest.sessions == 100
    assert manifest.meta["agent_args"]["options"] == {"spine": "p5"}
    assert manifest.prompts == ["close@v1", "offer@v1", "score@v1"]


def test_every_llm_event_records_template_variables_and_rendered_messages(baseline: Path) -> None:
    rows = query_rows(
        baseline,
        "SELECT e.prompt, e.payload, r.request FROM events e JOIN requests r USING (run_id, session_id, seq) "
        "WHERE e.run_id = 'v1' AND e.kind = 'llm' LIMIT 50",
    )
    assert len(rows) == 50
    for prompt, payload, request in rows:
        body = json.loads(payload)
        assert prompt.count("@") == 1 and body["variables"]["customer_id"]
        messages = json.loads(request)["messages"]
        assert messages[0]["role"] == "system" and body["variables"]["customer_id"] in messages[1]["content"]


def test_same_seed_twice_gives_identical_action_digests(baseline: Path) -> None:
    record_run(baseline, "contract-renewal", "v1-again", sessions=100, model="sim:renewal@v1")
    sql = (
        "SELECT session_id, seq, name, digest FROM events WHERE run_id = '{}' AND kind = 'action' "
        "ORDER BY session_id, seq"
    )
    first, second = query_rows(baseline, sql.format("v1")), query_rows(baseline, sql.format("v1-again"))
    assert len(first) > 500 and first == second


def test_a_new_version_drifts_and_the_ground_truth_says_how(baseline: Path) -> None:
    record_run(baseline, "contract-renewal", "v2", sessions=100, model="sim:renewal@v2")
    sql = (
        "SELECT a.digest <> b.digest FROM events a JOIN events b USING (session_id, seq) WHERE a.run_id = 'v1' "
        "AND b.run_id = 'v2' AND a.kind = 'action' AND a.name = 'propose_offer' AND b.name = 'propose_offer'"
    )
    changed = [r[0] for r in query_rows(baseline, sql)]
    assert any(changed) and not all(changed)
    truth = [json.loads(line) for line in (baseline / "runs" / "v2" / "truth.jsonl").read_text().splitlines()]
    rules = Counter(rule for t in truth for rule in t["rules"])
    assert rules["v2: discount rounded to a multiple of 5"] > 0
    assert any(c["field"] == "discount_pct" for t in truth for c in t["changes"])
    assert {"session_id", "step", "llm_seq", "prompt", "model"} <= set(truth[0])


def test_prompt_version_changes_what_the_model_offers(tmp_path: Path) -> None:
    record_run(tmp_path, "contract-renewal", "p2", sessions=60, prompts={"offer": "v2"})
    rows = query_rows(
        tmp_path,
        "SELECT prompt, payload FROM events WHERE kind = 'action' AND name = 'propose_offer' AND status = 'ok'",
    )
    discounts = [json.loads(p)["args"]["discount_pct"] for _, p in rows]
    assert discounts and max(discounts) <= 25
    prompts = {r[0] for r in query_rows(tmp_path, "SELECT DISTINCT prompt FROM events WHERE kind = 'llm'")}
    assert "offer@v2" in prompts and "offer@v1" not in prompts


def test_both_spines_reach_the_same_terminal_states(tmp_path: Path) -> None:
    p5 = record_run(tmp_path, "contract-renewal", "p5", sessions=60, options={"spine": "p5"})
    p3 = record_run(tmp_path, "contract-renewal", "p3", sessions=60, options={"spine": "p3"})
    assert p5.terminal_states == p3.terminal_states
    spine_tags = query_rows(
        tmp_path,
        "SELECT run_id, count(*) FROM events WHERE kind = 'state' AND step = 'day-000/terminal' "
        "AND pattern = CASE run_id WHEN 'p5' THEN 'P5' ELSE 'P3' END GROUP BY 1 ORDER BY 1",
    )
    assert spine_tags == [("p3", 60), ("p5", 60)]


def test_v3_sometimes_answers_malformed_and_the_boundary_rejects_it(tmp_path: Path) -> None:
    record_run(tmp_path, "contract-renewal", "v3", sessions=300, model="sim:renewal@v3")
    statuses = dict(
        query_rows(
            tmp_path, "SELECT status, count(*) FROM events WHERE kind = 'action' AND name <> 'dispatch' GROUP BY 1"
        )
    )
    assert statuses.get("parse_failed", 0) >= 1 and statuses.get("gated", 0) >= 1


def test_noise_makes_a_version_disagree_with_itself_across_repeats() -> None:
    noisy = resolve("sim:renewal@v1?noise=0.5")
    request = {
        "messages": [
            {"role": "system", "content": "Discount guidance: policy allows at most 30%."},
            {"role": "user", "content": "customer_id: X\ncontract: Month-to-month\nchurn_risk: 0.5"},
        ],
        "tools": [{"type": "function", "function": {"name": "propose_offer"}}],
    }

    async def answers() -> set[str]:
        out = set()
        for repeat in range(12):
            done = await noisy.complete(request, seed=0, repeat=repeat)
            out.add(done.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        return out

    assert len(asyncio.run(answers())) > 1
    quiet = resolve("sim:renewal@v1")
    assert len({json.dumps(asyncio.run(quiet.complete(request, repeat=r)).response) for r in range(5)}) == 1


@pytest.mark.parametrize(
    "spec",
    [
        "sim:renewal@v9",
        "sim:renewal",
        "sim:nothing@v1",
        "sim:renewal@v1?noise=2",
        "sim:renewal@v1?temperature=1",
        "gpt4",
    ],
)
def test_unknown_model_specs_are_refused(spec: str) -> None:
    with pytest.raises(UnknownModel):
        resolve(spec)


@pytest.mark.parametrize("kind", ["p5", "p3"])
def test_each_spine_shows_the_model_its_own_shape_of_the_same_state(kind: str) -> None:
    from sdbctl.fixtures.contract_renewal.spines import make_spine
    from sdbctl.patterns import EventLog
    from sdbctl.sdb.events import MemorySink

    spine = make_spine(kind, MemorySink("c1"), EventLog(), "c1")
    spine.create({"tenant": "C-001"}, step="open")
    spine.move("score", {"churn_risk": 0.4}, step="score")
    view = spine.view()
    assert "0.4" in view and "C-001" in view  # the same facts in both
    if kind == "p5":  # one row: its version, its state, where it may go next
        assert "version 2" in view and "state = scored" in view
        assert "legal next transitions = eol -> eol_notified, escalate -> human_required, offer -> offer_sent" in view
    else:  # the log to fold: no state named, no transitions offered
        assert "2 events since the renewal window opened" in view and "transition:score" in view
        assert "scored" not in view and "legal" not in view
    # the simulator reads only `key: value` lines: a view adds none of them to the prompt
    from sdbctl.fixtures.contract_renewal.simulator import read_request

    fields, *_ = read_request({"messages": [{"role": "user", "content": f"customer_id: c1\n\n{view}"}]})
    assert fields == {"customer_id": "c1"}


@pytest.mark.parametrize("kind", ["p5", "p3"])
def test_a_closing_outcome_the_spine_cannot_reach_is_refused_and_the_state_closes_its_own_way(kind: str) -> None:
    from sdbctl.fixtures.contract_renewal.spines import make_spine
    from sdbctl.patterns import EventLog
    from sdbctl.sdb.events import MemorySink

    sink = MemorySink("c1")
    spine = make_spine(kind, sink, EventLog(), "c1")
    spine.create({}, step="open")
    for action in ("score", "offer", "accept"):
        spine.move(action, {}, step=action)
    assert spine.finish("restructure", step="close") == "renewed"  # accepted: restructured is out of reach
    refused = [e for e in sink.events if e["kind"] == "gate" and e["name"] == "transition"]
    assert len(refused) == 1 and refused[0]["status"] == "gated" and "'restructured'" in refused[0]["reason"]
    legal = make_spine(kind, MemorySink("c2"), EventLog(), "c2")
    legal.create({}, step="open")
    for action in ("score", "offer", "reject"):
        legal.move(action, {}, step=action)
    assert legal.finish("renew", step="close") == "renewed"  # declined -> renew is a transition: taken
