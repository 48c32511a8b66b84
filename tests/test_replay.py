"""The replay engine: zero divergence on recorded answers, real providers over HTTP on 127.0.0.1,
retries, timeouts, the cache, resume after SIGKILL, and prompt re-rendering."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.query import read_only_query
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store, connect, run_query
from tests.conftest import CLI, SDBCTL, assert_one_line_error, wait_until
from tests.helpers import record_run, run_events
from tests.llm_server import LLMServer, as_plain_json, simulator_answer

sdbctl.fixtures.workloads.register_all()


def _actions(store: Path, run_id: str) -> list[tuple[Any, ...]]:
    """Boundary actions as (session, step, name, digest), sorted: step mode asks concurrently, so the
    order within a session may differ; the differ aligns by step."""
    sql = (
        f"SELECT session_id, step, name, digest FROM events WHERE run_id = '{run_id}' AND kind = 'action' "
        "AND parent IS NOT NULL ORDER BY session_id, seq"
    )
    return sorted(run_query(connect(Store.open(store)), sql)[1])


def _all_actions(store: Path, run_id: str) -> list[tuple[Any, ...]]:
    sql = (
        f"SELECT session_id, name, digest, status FROM events WHERE run_id = '{run_id}' AND kind = 'action' "
        "ORDER BY session_id, seq"
    )
    return run_query(connect(Store.open(store)), sql)[1]


@pytest.mark.parametrize("workload", ["contract-renewal", "support-triage", "research"])
def test_recorded_answers_give_zero_divergence_in_both_modes(store: Path, workload: str) -> None:
    record_run(store, workload, "src", sessions=10)
    step = replay(Store.open(store), "src", ReplayOptions(model="recorded", run_id="step"))
    assert step.status == "complete" and step.divergences == 0 and step.model_calls == 0
    assert _actions(store, "step") == _actions(store, "src")
    session = replay(Store.open(store), "src", ReplayOptions(model="recorded", mode="session", run_id="sess"))
    assert session.divergences == 0 and session.stopped_sessions == 0
    # closed loop: every action of the agent, boundary or not, in the same order with the same digest
    assert _all_actions(store, "sess") == _all_actions(store, "src")
    manifest = Store.open(store).manifest("sess")
    assert (manifest.source_run, manifest.mode, manifest.model, manifest.repeat) == ("src", "session", "recorded", 1)


def test_a_divergent_model_is_reported_session_by_session(store: Path, sdbctl: CLI) -> None:
    record_run(store, "contract-renewal", "src", sessions=8)
    result = replay(Store.open(store), "src", ReplayOptions(model="sim:renewal@v2", run_id="v2", repeat=2))
    assert result.divergences > 0 and result.errors == 0
    sources = sorted({r[0] for r in _actions(store, "src")})
    assert [(s.session_id, s.repeat) for s in result.sessions] == [(s, r) for s in sources for r in (0, 1)]
    assert sum(s.divergences for s in result.sessions) == result.divergences
    assert sum(s.steps for s in result.sessions) == result.steps_done == result.steps
    assert {s.status for s in result.sessions} == {"complete"}
    diverged = {s.session_id for s in result.sessions if s.divergences}
    # a session diverges where its replayed actions differ from the recorded ones
    assert diverged and diverged <= set(sources)
    out = sdbctl("replay", "src", "--model", "recorded", "--json", "--store", str(store))
    summary = json.loads(out.stdout)
    assert [(s["session_id"], s["divergences"], s["status"]) for s in summary["sessions"]] == [
        (s, 0, "complete") for s in sources
    ]
    assert set(summary["sessions"][0]) == {
        "session_id", "repeat", "status", "steps", "resumed_steps", "divergences", "errors", "reason"
    }  # fmt: skip


def test_options_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        ReplayOptions("recorded")  # type: ignore[call-arg]
    opts = ReplayOptions(model="recorded")
    with pytest.raises(AttributeError):
        opts.model = "sim:renewal@v2"  # type: ignore[misc]


def test_openai_provider_through_the_sdk_against_a_local_server(store: Path, sdbctl: CLI) -> None:
    record_run(store, "contract-renewal", "src", sessions=8)
    with LLMServer() as server:
        out = sdbctl(
            "replay", "src", "--model", "openai:gpt-local", "--base-url", server.url, "--run-id", "oa", "--json"
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["model_calls"] == summary["steps"] == server.total > 0
        assert summary["errors"] == 0 and summary["divergences"] == 0  # the server answers as sim:renewal@v1
        assert [s["status"] for s in summary["sessions"]] == ["complete"] * 8
        assert sum(s["steps"] for s in summary["sessions"]) == summary["steps"]
        assert all(body["model"] == "gpt-local" for body in server.bodies)
        assert {k for body in server.bodies for k in body} <= {"model", "messages", "tools", "temperature"}
    assert _actions(store, "oa") == _actions(store, "src")


def test_plain_json_answers_are_parsed_into_the_same_actions(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=6)
    with LLMServer(as_plain_json(simulator_answer())) as server:
        result = replay(
            Store.open(store),
            "src",
            ReplayOptions(model="openai:plain", base_url=server.url, run_id="plain", cache=False),
        )
    assert result.errors == 0
    assert [r[2:] for r in _actions(store, "plain")] == [r[2:] for r in _actions(store, "src")]


def test_anthropic_provider_against_a_local_messages_api(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=4)
    with LLMServer() as server:
        result = replay(
            Store.open(store), "src", ReplayOptions(model="anthropic:claude-local", base_url=server.root, run_id="an")
        )
    assert result.errors == 0 and result.model_calls == server.total > 0
    assert _actions(store, "an") == _actions(store, "src")


def test_429_with_retry_after_is_honoured_and_a_500_is_retried(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=2)
    with LLMServer() as server:
        server.faults = [("429", 1.0), ("500", 0.0)]
        result = replay(
            Store.open(store), "src", ReplayOptions(model="openai:x", base_url=server.url, concurrency=1, run_id="r")
        )
        gap = server.times[1] - server.times[0]
    assert result.errors == 0 and result.retries == 2
    assert gap >= 0.95  # the second attempt waited for Retry-After: 1
    assert result.model_calls == result.steps + 2


def test_a_slow_answer_times_out_and_is_an_error_not_a_divergence(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=2)
    with LLMServer() as server:
        server.faults = [("slow", 1.5), ("slow", 1.5)]
        result = replay(
            Store.open(store),
            "src",
            ReplayOptions(model="openai:x", base_url=server.url, concurrency=1, timeout=0.4, retries=2, run_id="slow"),
        )
    assert result.status == "complete" and result.errors == 1
    assert result.steps_done == result.steps
    errors = run_query(connect(Store.open(store), "slow"), "SELECT name, status FROM events WHERE kind = 'error'")[1]
    assert errors == [("provider", "error")]


def test_second_replay_asks_nothing_and_no_cache_asks_everything(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=4)
    with LLMServer() as server:
        first = replay(Store.open(store), "src", ReplayOptions(model="openai:x", base_url=server.url))
        asked = server.total
        second = replay(Store.open(store), "src", ReplayOptions(model="openai:x", base_url=server.url))
        assert server.total == asked and second.model_calls == 0
        assert second.cache_hits == first.steps
        third = replay(Store.open(store), "src", ReplayOptions(model="openai:x", base_url=server.url, cache=False))
        assert third.model_calls == third.steps and server.total == 2 * asked


def test_sigkill_then_resume_asks_no_finished_step_again(sdbctl: CLI, store: Path, tmp_path: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=40)
    with LLMServer(delay=0.05) as server:
        cmd = [
            str(SDBCTL),
            "replay",
            "src",
            "--model",
            "openai:x",
            "--base-url",
            server.url,
            "--concurrency",
            "2",
            "--run-id",
            "killed",
            "--no-cache",
            "--store",
            str(store),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the run's directory appears a moment before its manifest: wait for the manifest itself
        manifest_file = store / "runs" / "killed" / "run.json"
        wait_until(lambda: manifest_file.exists() and Store.open(store).manifest("killed").events >= 20, 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert Store.open(store).manifest("killed").status == "partial"
        finished = {
            LLMServer.key(json.loads(r))
            for (r,) in read_only_query(Store.open(store), "SELECT request FROM requests", "killed")[1]
        }
        total = run_query(connect(Store.open(store), "src"), "SELECT count(*) FROM events WHERE kind = 'llm'")[1][0][0]
        assert 0 < len(finished) < total
        resume = ["--resume", "killed", "-m", "openai:x", "--base-url", server.url]  # named again: never the store's
        out = sdbctl("replay", *resume, "--store", str(store), "--json")
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["status"] == "complete" and summary["resumed_steps"] >= len(finished)
        assert sum(s["resumed_steps"] for s in summary["sessions"]) == summary["resumed_steps"]
        assert {s["status"] for s in summary["sessions"]} <= {"complete", "resumed"}
        assert all(server.requests[key] == 1 for key in finished)  # no finished step asked twice
    manifest = Store.open(store).manifest("killed")
    assert manifest.status == "complete"
    llm = run_query(connect(Store.open(store), "killed"), "SELECT count(*) FROM events WHERE kind = 'llm'")[1][0][0]
    assert llm == total


def test_new_prompt_version_changes_the_rendered_messages_and_nothing_else(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=6)
    replay(Store.open(store), "src", ReplayOptions(model="recorded", prompts={"offer": "v2"}, run_id="p2"))
    llm = {run: [e for e in run_events(store, run, payloads=True) if e["kind"] == "llm"] for run in ("src", "p2")}
    before, after = ([(e["session_id"], e["step"], e["prompt"], e["payload"]) for e in llm[r]] for r in ("src", "p2"))
    assert len(before) == len(after)
    changed = 0
    for (s1, st1, p1, r1), (s2, st2, p2, r2) in zip(before, after, strict=True):
        assert (s1, st1) == (s2, st2) and r1["variables"] == r2["variables"]
        assert {k: v for k, v in r1["request"].items() if k != "messages"} == {
            k: v for k, v in r2["request"].items() if k != "messages"
        }
        if p1 == "offer@v1":
            changed += 1
            assert p2 == "offer@v2" and r1["request"]["messages"] != r2["request"]["messages"]
            assert r1["request"]["messages"][2:] == r2["request"]["messages"][2:]  # handed-back history kept
        else:
            assert p1 == p2 and r1["request"] == r2["request"]
    assert changed >= 6


def test_repeat_records_the_repeat_index_and_never_reads_the_cache(store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=3)
    replay(Store.open(store), "src", ReplayOptions(model="sim:renewal@v1?noise=0.5", run_id="warm"))
    result = replay(Store.open(store), "src", ReplayOptions(model="sim:renewal@v1?noise=0.5", repeat=3, run_id="rep"))
    assert result.cache_hits == 0 and result.model_calls == result.steps
    repeats = run_query(
        connect(Store.open(store), "rep"),
        "SELECT DISTINCT json_extract(payload, '$.replay.repeat')::INT FROM events WHERE kind = 'llm' ORDER BY 1",
    )[1]
    assert repeats == [(0,), (1,), (2,)]


def test_python_callable_provider(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record_run(store, "contract-renewal", "src", sessions=2)
    (tmp_path / "my_model.py").write_text(
        "from sdbctl.sdb.providers import resolve\n_sim = resolve('sim:renewal@v1')\n"
        "async def answer(request):\n    return (await _sim.complete(request)).response\n"
    )
    monkeypatch.chdir(tmp_path)
    result = replay(Store.open(store), "src", ReplayOptions(model="py:my_model:answer", run_id="py"))
    assert result.errors == 0 and _actions(store, "py") == _actions(store, "src")


def test_replay_refuses_bad_requests_before_asking_anything(store: Path, sdbctl: CLI) -> None:
    record_run(store, "contract-renewal", "src", sessions=2)
    with LLMServer() as server:
        bad = sdbctl(
            "replay",
            "src",
            "--model",
            "openai:x",
            "--base-url",
            server.url,
            "--prompt",
            "offer@v9",
            "--store",
            str(store),
        )
        assert_one_line_error(bad, "no version 'v9' of 'offer'", "versions: v1, v2")
        assert server.total == 0
    assert_one_line_error(sdbctl("replay", "src", "--store", str(store)), "needs RUN and --model")
    assert_one_line_error(sdbctl("replay", "src", "--model", "sim:renewal@v8", "--store", str(store)), "v8")
    missing = sdbctl("replay", "nope", "--model", "recorded", "--store", str(store))
    assert_one_line_error(missing, "'nope' not found")
    assert missing.stderr.startswith("sdbctl: error:")  # refused before the progress bar, which adds a line
    replay(Store.open(store), "src", ReplayOptions(model="recorded", run_id="done"))
    assert_one_line_error(sdbctl("replay", "--resume", "done", "--store", str(store)), "nothing to resume")
    with Recorder(store=store, run_id="half") as rec:
        rec.session("s").input("x", 1)
        rec.close("partial")
    with pytest.raises(SdbError, match="not a replay run"):
        replay(Store.open(store), "", ReplayOptions(model="recorded"), resume="half")
