"""The recording proxy and ``sdbctl record -- CMD``: an unmodified openai-SDK agent, recorded through a
real proxy on 127.0.0.1 in front of a real local upstream, streamed and not; replayed; no secret stored."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdbctl.fixtures.agents.weather_model import answer as weather_answer
from sdbctl.recorders.proxy import ConversationRecorder, RecordingProxy, session_key
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.store import Store, connect, query_arrow
from tests.conftest import CLI, assert_one_line_error, wait_until
from tests.llm_server import LLMServer, as_plain_json

API_KEY = "sk-proj-TESTKEY0123456789abcdefghijklmnop"
# run as a plain script, by path, as a user would: `sdbctl record -- python weather_agent.py`
AGENT = [sys.executable, str(Path(__file__).resolve().parent.parent / "fixtures" / "agents" / "weather_agent.py")]


def _children(pid: int) -> list[str]:
    """The processes ``pid`` started (Linux)."""
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _events(store: Path, run_id: str, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    con = connect(Store.open(store), run_id)
    kind_list = ", ".join(f"'{k}'" for k in kinds)
    rows = query_arrow(
        con,
        f"SELECT session_id, seq, parent, kind, name, status, model, payload FROM events "
        f"WHERE kind IN ({kind_list}) ORDER BY session_id, seq",
    ).to_pylist()
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_an_unmodified_sdk_agent_is_recorded_and_replays(
    sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path, stream: bool
) -> None:
    with LLMServer(weather_answer) as upstream:
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url}
        flags = ["--stream"] if stream else []
        # `record -- CMD` as a process: CMD, its child, writes to sdbctl's own stdout
        out = sdbctl_process("record", "--run-id", "weather", "--", *AGENT, "Paris", "Oslo", "Lima", *flags, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "weather"  # the run id is the last line
        assert "It is 14°C in Paris." in out.stdout  # the agent's own output passes through
        # the key reached the upstream (the proxy forwards auth) ...
        assert all(h.get("Authorization") == f"Bearer {API_KEY}" for h in upstream.headers)
        assert upstream.total == 6 and all(b.get("stream", False) == stream for b in upstream.bodies)

        store = tmp_path / ".sdb"
        did = [json.loads(line) for line in (tmp_path / "agent-log.jsonl").read_text().splitlines()]
        actions = _events(store, "weather", ("action",))
        effects = _events(store, "weather", ("effect",))
        llm = _events(store, "weather", ("llm",))
        assert len(llm) == 6 and {r["model"] for r in llm} == {"openai:gpt-4o-mini"}
        assert len({r["session_id"] for r in llm}) == 3  # one conversation per city
        tool_calls = [r for r in actions if r["name"] == "get_weather"]
        recorded = {r["payload"]["call_id"]: r["payload"]["args"] for r in tool_calls}
        assert recorded == {d["call_id"]: d["args"] for d in did if d["kind"] == "action"} and len(recorded) == 3
        by_seq = {(r["session_id"], r["seq"]): r for r in actions}
        done_by_id = {d["call_id"]: d for d in did if d["kind"] == "effect"}
        assert len(effects) == len(done_by_id) == 3
        for effect in effects:
            done = done_by_id[effect["payload"]["result"]["call_id"]]
            assert effect["payload"]["result"] == {"call_id": done["call_id"], "content": done["result"]}
            call = by_seq[(effect["session_id"], effect["parent"])]  # linked to its call
            assert call["payload"]["call_id"] == done["call_id"] and effect["name"] == "get_weather"
        replies = sorted(r["payload"]["args"]["content"] for r in actions if r["name"] == "message")
        assert replies == sorted(d["content"] for d in did if d["kind"] == "message")
        first = llm[0]["payload"]
        assert first["response"]["choices"][0]["finish_reason"] == "tool_calls"
        assert "[REDACTED:email]" in json.dumps(first["request"])  # payload text redacted on the way in

        # no secret anywhere in the store: not the key, not the header, not the e-mail
        for path in store.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert API_KEY.encode() not in data and b"TESTKEY" not in data, path
                assert b"jane.doe@example.com" not in data, path
        manifest = json.loads((store / "runs" / "weather" / "run.json").read_text())
        assert "email" in manifest["meta"]["redaction"] and manifest["recorder"] == "proxy"

        # replayable in step mode like any run: recorded answers, then the (simulated) model again
        same = json.loads(sdbctl("replay", "weather", "--model", "recorded", "--json").stdout)
        assert same["divergences"] == 0 and same["steps"] == 6
        again = sdbctl(
            "replay", "weather", "--model", "openai:gpt-4o-mini", "--base-url", upstream.url,
            "--run-id", "again", "--json", env={"OPENAI_API_KEY": API_KEY},
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["divergences"] == 0 and upstream.total == 12
        diff = json.loads(sdbctl("diff", "weather", "again", "--json").stdout)
        layers = diff["summary"]["by_layer"]
        assert layers["write"]["steps_compared"] + layers["speech"]["steps_compared"] == 6
        assert diff["divergences"] == [] and diff["summary"]["steps_compared"] == layers["write"]["steps_compared"]


def test_the_command_exit_code_and_failures(sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path) -> None:
    with LLMServer(weather_answer) as upstream:
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url}
        # the command's exit code is the console script's
        out = sdbctl_process("record", "--run-id", "three", "--", *AGENT, "Paris", "--exit-code", "3", env=env)
        assert out.returncode == 3 and out.stdout.strip().splitlines()[-1] == "three"
        runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json").stdout)}
        assert runs["three"]["status"] == "complete" and runs["three"]["events"] == 5
        # the upstream fails: the agent sees the error, the run records it as an error event
        upstream.faults.append(("500", 0))
        out = sdbctl_process(
            "record", "--run-id", "failed", "--json", "--", *AGENT, "Oslo", env={**env, "OPENAI_MAX_RETRIES": "0"}
        )
        summary = json.loads(out.stdout[out.stdout.rindex('{\n  "run_id"') :])  # after the agent's output
        assert summary["errors"] >= 1 and summary["exit_code"] == out.returncode
    assert_one_line_error(sdbctl("record", "--", "no-such-command-xyz"), "command not found: no-such-command-xyz")
    assert_one_line_error(sdbctl("record", "--upstream", "ftp://x", "--", "true"), "not an http(s) URL")
    assert_one_line_error(sdbctl("record", "contract-renewal", "--", "true"), "not both")
    assert_one_line_error(sdbctl("record", "-n", "3", "--", "true"), "--sessions only apply to a workload")
    (tmp_path / "pyproject.toml").write_text('[tool.sdbctl.redact.rules]\nbad = "([unclosed"\n')
    assert_one_line_error(sdbctl("record", "--", "true"), "pyproject.toml", "redaction rule 'bad'")
    names = [p.name for p in (tmp_path / ".sdb" / "runs").iterdir()]
    assert sorted(names) == ["failed", "three"]  # the refused commands wrote no run


def _serve(tmp_path: Path, upstream: str) -> tuple[Recorder, ConversationRecorder, RecordingProxy]:
    rec = Recorder(tmp_path / ".sdb", run_id="direct", handle_signals=False, recorder="proxy")
    conversations = ConversationRecorder(rec, load_redactor(tmp_path))
    return rec, conversations, RecordingProxy(upstream, conversations).start()


def test_streamed_chunks_reach_the_client_as_they_arrive(tmp_path: Path) -> None:
    with LLMServer(weather_answer) as upstream:
        upstream.chunk_delay = 0.05  # ~10 chunks: the whole answer takes about half a second
        rec, _, proxy = _serve(tmp_path, upstream.url)
        request = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "weather in Oslo?"}]}
        arrivals: list[float] = []
        started = time.monotonic()
        with (
            httpx.Client() as client,
            client.stream("POST", f"{proxy.url}/chat/completions", json=request, headers={"X-SDB-Session": "s-1"}) as r,
        ):
            for _ in r.iter_raw():
                arrivals.append(time.monotonic() - started)
        proxy.stop()
        rec.close()
        assert len(arrivals) >= 5  # not one buffered block
        assert arrivals[0] < 0.5 * arrivals[-1]  # the first chunk came long before the last
        llm = _events(tmp_path / ".sdb", "direct", ("llm", "action"))
        assert [r["session_id"] for r in llm] == ["s-1", "s-1"]  # the header names the session
        assert llm[1]["payload"]["args"] == {"city": "Oslo", "unit": "C"}  # fragments joined


def test_other_routes_pass_through_unrecorded(tmp_path: Path) -> None:
    with LLMServer(weather_answer) as upstream:
        rec, _, proxy = _serve(tmp_path, upstream.url)
        r = httpx.post(f"{proxy.url}/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer sk-abc"})
        assert r.status_code == 404 and "no route /v1/embeddings" in r.text  # the upstream's own answer
        assert upstream.headers[-1]["Authorization"] == "Bearer sk-abc"
        proxy.stop()
        rec.close()
    assert rec.events_written == 0


def test_unreachable_upstream_is_a_502_and_an_error_event(tmp_path: Path) -> None:
    rec, _, proxy = _serve(tmp_path, "http://127.0.0.1:9/v1")  # the discard port: nothing listens
    r = httpx.post(f"{proxy.url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    proxy.stop()
    rec.close()
    assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
    errors = _events(tmp_path / ".sdb", "direct", ("error",))
    assert len(errors) == 1 and errors[0]["payload"]["detail"]["status"] == 502


def test_session_key_is_stable_across_a_conversation() -> None:
    opening = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    later = [*opening, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "more"}]
    assert session_key(None, {"messages": opening}) == session_key(None, {"messages": later})
    assert session_key(None, {"messages": opening}) != session_key(None, {"messages": opening[:1]})
    assert session_key("abc", {"messages": opening}) == "abc"


def test_proxy_serves_concurrent_clients(tmp_path: Path) -> None:
    with LLMServer(weather_answer) as upstream:
        rec, conversations, proxy = _serve(tmp_path, upstream.url)
        errors: list[BaseException] = []

        def client(n: int) -> None:
            try:
                body = {
                    "model": "m",
                    "stream": n % 2 == 0,
                    "messages": [{"role": "user", "content": f"weather in C{n}x"}],
                }
                r = httpx.post(f"{proxy.url}/chat/completions", json=body, headers={"X-SDB-Session": f"s{n}"})
                assert r.status_code == 200
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        proxy.stop()
        rec.close()
    assert not errors and conversations.llm_events == 20
    assert len({r["session_id"] for r in _events(tmp_path / ".sdb", "direct", ("llm",))}) == 20


def test_sdbctl_proxy_serves_until_a_signal_and_closes_the_run(tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.conftest import SDBCTL, cli_env

    with LLMServer(weather_answer) as upstream:
        proc = subprocess.Popen(
            [str(SDBCTL), "proxy", "--upstream", upstream.url, "--run-id", "served"],
            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        body = {"model": "m", "messages": [{"role": "user", "content": "weather in Lima?"}]}
        r = httpx.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "served"
    rows = _events(tmp_path / ".sdb", "served", ("llm", "action"))
    assert [r["kind"] for r in rows] == ["llm", "action"] and rows[1]["payload"]["args"]["city"] == "Lima"
    assert not any(API_KEY.encode() in p.read_bytes() for p in (tmp_path / ".sdb").rglob("*") if p.is_file())


def test_a_client_leaving_mid_stream_is_an_error_event_and_the_proxy_serves_on(tmp_path: Path) -> None:
    with LLMServer(weather_answer) as upstream:
        upstream.chunk_delay = 0.1
        rec, conversations, proxy = _serve(tmp_path, upstream.url)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "weather in Oslo?"}]}
        with httpx.Client() as client, client.stream("POST", f"{proxy.url}/chat/completions", json=body) as r:
            next(r.iter_raw())  # one chunk, then hang up
        wait_until(lambda: conversations.errors == 1, 10, "the hang-up recorded")
        upstream.chunk_delay = 0.0
        again = httpx.post(f"{proxy.url}/chat/completions", json={**body, "stream": False})
        assert again.status_code == 200
        proxy.stop()
        rec.close()
    assert conversations.errors == 1 and conversations.llm_events == 1
    errors = _events(tmp_path / ".sdb", "direct", ("error",))
    assert errors[0]["payload"]["detail"]["status"] in (499, 502)


def test_the_upstream_is_asked_for_uncompressed_answers(tmp_path: Path) -> None:
    with LLMServer(weather_answer) as upstream:
        rec, _, proxy = _serve(tmp_path, upstream.url)
        body = {"model": "m", "messages": [{"role": "user", "content": "weather in Lima?"}]}
        r = httpx.post(f"{proxy.url}/chat/completions", json=body, headers={"Accept-Encoding": "gzip, br"})
        proxy.stop()
        rec.close()
    assert r.status_code == 200 and upstream.headers[-1]["Accept-Encoding"] == "identity"


def test_repeated_conversations_are_separate_sessions(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / ".sdb", run_id="rep", handle_signals=False)
    conv = ConversationRecorder(rec, load_redactor(tmp_path))
    opening = [{"role": "system", "content": "s"}, {"role": "user", "content": "weather in Oslo?"}]
    turn = [*opening, {"role": "assistant", "content": "It is cold."}, {"role": "user", "content": "thanks"}]
    first = conv.session_for(None, {"messages": opening})
    assert conv.session_for(None, {"messages": turn}) == first  # a continuation
    second = conv.session_for(None, {"messages": opening})  # the same task asked again
    third = conv.session_for(None, {"messages": opening})  # and again, at the same time
    assert len({first, second, third}) == 3
    assert {conv.session_for(None, {"messages": turn}), conv.session_for(None, {"messages": turn})} == {second, third}
    conv.failure(first, {"messages": turn}, 500, {})
    assert conv.session_for(None, {"messages": turn}) == first  # a retry of the failed call
    rec.close()


def test_a_stalled_stream_does_not_hold_up_the_commands_exit(sdbctl: CLI, sdbctl_process: CLI, tmp_path: Path) -> None:
    script = (
        "import sys\nfrom openai import OpenAI\n"
        "stream = OpenAI().chat.completions.create(model='m', stream=True, "
        "messages=[{'role': 'user', 'content': 'weather in Oslo?'}])\n"
        "next(iter(stream))\nsys.exit(3)\n"
    )
    (tmp_path / "leave.py").write_text(script)
    with LLMServer(weather_answer) as upstream:
        upstream.chunk_delay = 60  # one chunk, then silence
        started = time.monotonic()
        out = sdbctl_process(  # the console script's own exit, with a call still in flight
            "record",
            "--run-id",
            "stall",
            "--",
            sys.executable,
            "leave.py",
            env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url},
        )
        took = time.monotonic() - started
    assert out.returncode == 3, out.stderr
    assert took < 45  # the call in flight is cut off after a grace period, not awaited for a minute
    runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json").stdout)}
    assert runs["stall"]["status"] == "complete"
    assert len(_events(tmp_path / ".sdb", "stall", ("error",))) == 1  # recorded as an error, not lost


def test_a_sigint_sent_to_sdbctl_alone_reaches_the_command(tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.conftest import SDBCTL, cli_env

    proc = subprocess.Popen(
        [str(SDBCTL), "record", "--upstream", "http://127.0.0.1:9/v1", "--", "sleep", "30"],
        cwd=tmp_path, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_until(lambda: _children(proc.pid), 15, "the command running")  # and so the proxy up, before it
    proc.send_signal(signal.SIGINT)  # not from a terminal: nothing else delivers it to `sleep`
    assert proc.wait(timeout=15) == 128 + signal.SIGINT


def test_a_foreign_host_or_any_origin_is_refused_and_nothing_is_forwarded(tmp_path: Path) -> None:
    """A web page in the user's browser can reach 127.0.0.1 (with an Origin header), and a DNS-rebound
    name reaches it with its own Host: neither may use the upstream's credentials through the proxy."""
    with LLMServer(weather_answer) as upstream:  # credentials of the upstream's own, which the proxy adds
        rec, _, proxy = _serve(tmp_path, upstream.url.replace("http://", "http://user:upstream-secret@"))
        body = {"model": "m", "messages": [{"role": "user", "content": "weather in Lima?"}]}
        url = f"{proxy.url}/chat/completions"
        refused = [
            {"Host": f"rebound.example:{proxy.port}"},  # DNS rebinding: the attacker's name, our address
            {"Host": "127.0.0.1"},  # not our port
            {"Host": f"127.0.0.2:{proxy.port}"},
            {"Origin": "https://evil.example"},  # a page in the browser
            {"Origin": f"http://127.0.0.1:{proxy.port}"},  # any Origin: no browser page is an agent
            {"Origin": "null"},
        ]
        for headers in refused:
            r = httpx.post(url, json=body, headers=headers)
            assert r.status_code == 403, (headers, r.status_code)
            assert "refused" in r.json()["error"]["message"]
            r = httpx.get(f"{proxy.url}/models", headers=headers)  # not only the recorded route
            assert r.status_code == 403, headers
        assert upstream.total == 0 and upstream.headers == []  # nothing forwarded
        for host in (f"127.0.0.1:{proxy.port}", f"localhost:{proxy.port}", f"[::1]:{proxy.port}"):
            assert httpx.post(url, json=body, headers={"Host": host}).status_code == 200, host
        proxy.stop()
        rec.close()
    assert upstream.total == 3  # the three loopback calls, forwarded and recorded
    assert len(_events(tmp_path / ".sdb", "direct", ("llm",))) == 3


# one question through OPENAI_BASE_URL, as any agent asks it
_ASK = (
    "import os, httpx; httpx.post(os.environ['OPENAI_BASE_URL'] + '/chat/completions', "
    "json={'model': 'm', 'messages': [{'role': 'user', 'content': 'weather in Oslo?'}]}).raise_for_status()"
)


def test_a_json_text_answer_is_speech_unless_the_project_says_json_text(sdbctl: CLI, tmp_path: Path) -> None:
    """The proxy reads a text answer as the importer and a recorded replay do, by the project's one
    setting: speech by default, the JSON in it an action under ``actions = "json_text"``; either way
    its recorded replay shows no divergence."""
    with LLMServer(as_plain_json(weather_answer)) as upstream:
        for run in ("said", "acted"):
            if run == "acted":
                (tmp_path / "pyproject.toml").write_text('[tool.sdbctl.boundary]\nactions = "json_text"\n')
            out = sdbctl("record", "--upstream", upstream.url, "--run-id", run, "--", sys.executable, "-c", _ASK)
            assert out.returncode == 0, out.stderr
            again = json.loads(sdbctl("replay", run, "--model", "recorded", "--json").stdout)
            assert again["steps"] == 1 and again["divergences"] == 0
    said, acted = (_events(tmp_path / ".sdb", run, ("action",)) for run in ("said", "acted"))
    text = as_plain_json(weather_answer)(upstream.bodies[0])["choices"][0]["message"]["content"]
    assert [(r["name"], r["payload"]["args"]) for r in said] == [("message", {"content": text})]
    assert [(r["name"], r["payload"]["args"]) for r in acted] == [("get_weather", {"city": "Oslo", "unit": "C"})]
