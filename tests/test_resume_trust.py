"""``replay --resume``: a store is data, never configuration. The model, its base URL (where the
user's API key goes) and a local model's file come from the command line only; an option that differs
from the run being resumed is refused naming both values (issue 20 item 1, issue 21 item 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.providers import _registry
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.replay import ReplayOptions, prepare
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import record_run
from tests.llm_server import LLMServer

KEY = "sk-USERSOWNKEY0123456789"
NEVER_SENT = "sdbctl never sends credentials to an endpoint a store names"

sdbctl.fixtures.workloads.register_all()


def _partial_replay(store: Path, run_id: str, opts: ReplayOptions) -> None:
    """A replay run of ``src`` interrupted before its first step, its manifest saying ``opts``: what
    a store that arrived from elsewhere may hold."""
    meta = prepare(store, "src", opts).replayer.manifest_meta()
    rec = Recorder(store=store, run_id=run_id, meta=meta, recorder="replay", handle_signals=False)
    rec.close("partial", interrupted="KeyboardInterrupt")


def test_a_base_url_named_by_the_store_gets_no_request_and_never_the_key(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=3)
    with LLMServer() as evil:
        _partial_replay(store, "r", ReplayOptions(model="openai:x", base_url=evil.url))
        env = {"OPENAI_API_KEY": KEY}
        # no --model: refused, naming what the run says, never inviting the key to the store's endpoint
        out = sdbctl("replay", "--resume", "r", env=env)
        assert_one_line_error(out, "openai:x", "names an endpoint", NEVER_SENT, "--base-url naming a server you trust")
        assert f"--base-url {evil.url}" not in out.stderr and "pass it with --resume" not in out.stderr
        # the same model, no base URL: the store's URL is not used in its place
        out = sdbctl("replay", "--resume", "r", "--model", "openai:x", env=env)
        assert_one_line_error(out, "--base-url (none) differs", evil.url, NEVER_SENT, "a server you trust")
        assert "resume it against the server" not in out.stderr and f"--base-url {evil.url}" not in out.stderr
        assert evil.total == 0 and not any(KEY in str(h) for h in evil.headers)
    assert Store.open(store).manifest("r").status == "partial"


def test_a_store_named_base_url_is_refused_when_the_user_names_another(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=3)
    with LLMServer() as evil, LLMServer() as mine:
        _partial_replay(store, "r", ReplayOptions(model="openai:x", base_url=evil.url))
        out = sdbctl("replay", "--resume", "r", "-m", "openai:x", "--base-url", mine.url, env={"OPENAI_API_KEY": KEY})
        assert_one_line_error(out, f"--base-url {mine.url} differs", evil.url, NEVER_SENT)
        assert evil.total == 0 and mine.total == 0


def test_a_local_model_file_named_by_the_store_is_never_loaded(
    sdbctl: CLI, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_run(store, "contract-renewal", "src", sessions=2)
    _partial_replay(store, "r", ReplayOptions(model="recorded"))
    manifest = store / "runs" / "r" / "run.json"
    data = json.loads(manifest.read_text())
    evil = ".sdb/runs/r/evil.gguf"
    (store / "runs" / "r" / "evil.gguf").write_bytes(b"GGUF not a model")
    data["meta"]["replay"]["model"] = data["model"] = f"llama:{evil}"
    manifest.write_text(json.dumps(data))
    loaded: list[str] = []

    def loader(name: str, params: dict[str, str]) -> Any:
        loaded.append(name)
        raise AssertionError(f"loaded {name}")

    _registry.known_specs()  # the built-in families registered, so that the spy replaces llama:
    monkeypatch.setitem(_registry._FAMILIES, "llama", loader)
    out = sdbctl("replay", "--resume", "r")
    assert_one_line_error(out, f"llama:{evil}", "a store never chooses the model", "pass --model")
    assert f"--model llama:{evil}" not in out.stderr  # the store's model is no command to copy
    out = sdbctl("replay", "--resume", "r", "--model", "recorded")
    assert_one_line_error(out, "--model recorded differs", f"llama:{evil}")
    assert loaded == []


def test_an_option_that_differs_from_the_run_is_refused_naming_both(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=2)
    record_run(store, "contract-renewal", "other", sessions=2)
    _partial_replay(store, "r", ReplayOptions(model="sim:renewal@v2", prompts={"offer": "v2"}))
    v2 = ["--model", "sim:renewal@v2"]
    cases = [
        (["--model", "sim:renewal@v3"], ["--model sim:renewal@v3 differs", "sim:renewal@v2"]),
        ([*v2, "--mode", "session"], ["--mode session differs", "step"]),
        ([*v2, "--mode", "step", "--repeat", "3"], ["--repeat 3 differs", "'r'"]),
        ([*v2, "--prompt", "offer@v1"], ["--prompt offer@v1 differs", "offer@v2"]),
        ([*v2, "--run-id", "elsewhere"], ["--run-id elsewhere differs", "r"]),
    ]
    for extra, needles in cases:
        assert_one_line_error(sdbctl("replay", "--resume", "r", *extra), *needles)
    out = sdbctl("replay", "other", "--resume", "r", "--model", "sim:renewal@v2")
    assert_one_line_error(out, "RUN other differs", "a replay of src")
    assert Store.open(store).manifest("r").status == "partial"


def test_resume_completes_the_run_when_the_user_names_its_model(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=3)
    with LLMServer() as mine:
        _partial_replay(store, "r", ReplayOptions(model="openai:x", base_url=mine.url, concurrency=2))
        out = sdbctl(
            "replay", "src", "--resume", "r", "-m", "openai:x", "--base-url", mine.url, "--mode", "step",
            "--concurrency", "4", "--json", env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert mine.total > 0 and all(
            {k.lower(): v for k, v in h.items()}["authorization"] == f"Bearer {KEY}" for h in mine.headers
        )
    result = json.loads(out.stdout)
    assert result["status"] == "complete" and result["run_id"] == "r" and result["model_calls"] == mine.total
    assert Store.open(store).manifest("r").status == "complete"
    # a simulator run resumes alike; its prompt versions, as its model, are named again, never read from it
    _partial_replay(store, "s", ReplayOptions(model="sim:renewal@v2", prompts={"offer": "v2"}))
    unnamed = sdbctl("replay", "--resume", "s", "--model", "sim:renewal@v2", "--json")
    assert_one_line_error(unnamed, "--prompt (none)", "offer@v2", "pass it again")
    out = sdbctl("replay", "--resume", "s", "--model", "sim:renewal@v2", "--prompt", "offer@v2", "--json")
    assert out.returncode == 0, out.stderr
    resumed = Store.open(store).manifest("s")
    assert resumed.status == "complete" and "offer@v2" in resumed.prompts


# -- what the run is comes from its events (issue 20 follow-up, item 5) ------------------------------


def _manifest(store: Path, run_id: str, **changes: Any) -> None:
    """Edit ``run_id``'s manifest: top-level keys, and ``replay__KEY`` for ``meta.replay.KEY``."""
    path = store / "runs" / run_id / "run.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("replay__"):
            data["meta"]["replay"][key.removeprefix("replay__")] = value
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _events(store: Path, run_id: str) -> int:
    return Store.open(store).manifest(run_id).events


def test_a_resume_takes_the_mode_from_the_events_and_refuses_a_manifest_that_contradicts_them(
    sdbctl: CLI, store: Path
) -> None:
    record_run(store, "contract-renewal", "base", sessions=20)
    assert sdbctl("replay", "base", "-m", "sim:renewal@v2", "--run-id", "r1").returncode == 0
    before = _events(store, "r1")
    for claim in ({"replay__mode": "session"}, {"mode": "session"}):
        _manifest(store, "r1", status="partial", mode="step", replay__mode="step")
        _manifest(store, "r1", **claim)
        out = sdbctl("replay", "--resume", "r1", "--model", "sim:renewal@v2")
        assert_one_line_error(out, "runs/r1/run.json", "session", "step-mode")
        assert _events(store, "r1") == before and Store.open(store).manifest("r1").status == "partial"
    # told session mode on the command line: refused too, the events say step
    _manifest(store, "r1", mode="step", replay__mode="step")
    out = sdbctl("replay", "--resume", "r1", "--model", "sim:renewal@v2", "--mode", "session")
    assert_one_line_error(out, "--mode session differs", "step")
    # the run as its events say: nothing left to ask, and the verdict is the real one (8 of 60 steps)
    assert sdbctl("replay", "--resume", "r1", "--model", "sim:renewal@v2").returncode == 0
    assert _events(store, "r1") == before
    summary = json.loads(sdbctl("diff", "base", "r1", "--json").stdout)["summary"]
    assert (summary["steps_diverged"], summary["steps_compared"]) == (8, 60)


def test_a_run_that_wrote_nothing_resumes_in_the_mode_the_user_names(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "src", sessions=3)
    _partial_replay(store, "r", ReplayOptions(model="sim:renewal@v2", mode="session"))
    out = sdbctl("replay", "--resume", "r", "--model", "sim:renewal@v2")
    assert_one_line_error(out, "wrote no events", "session", "--mode session")
    out = sdbctl("replay", "--resume", "r", "--model", "sim:renewal@v2", "--mode", "session", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["mode"] == "session"


def test_a_mixed_run_is_refused_naming_it_never_a_type_error(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=6)
    assert sdbctl("replay", "base", "-m", "sim:renewal@v2", "--run-id", "r1").returncode == 0
    # what resuming a step run as a session replay used to leave: session events in a step run
    _manifest(store, "r1", status="partial")
    rec = Recorder(store=store, run_id="r1", resume=True, recorder="replay", handle_signals=False)
    with rec.unit():
        session = rec.session("extra")
        session.llm({"messages": []}, {"choices": []}, model="sim:renewal@v2", replay={"cached": True})
        session.state("replay:finished", {"terminal": None})
    rec.close("partial", interrupted="KeyboardInterrupt")
    for extra in ([], ["--mode", "session"], ["--mode", "step"]):
        out = sdbctl("replay", "--resume", "r1", "--model", "sim:renewal@v2", *extra)
        assert_one_line_error(out, "r1", "both a step-mode and a session-mode replay")


def test_a_saved_repeat_must_agree_with_the_events_and_be_in_range(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=4)
    assert sdbctl("replay", "base", "-m", "sim:renewal@v2", "--repeat", "3", "--run-id", "r3").returncode == 0
    _manifest(store, "r3", status="partial", repeat=2, replay__repeat=2)
    out = sdbctl("replay", "--resume", "r3", "--model", "sim:renewal@v2")
    assert_one_line_error(out, "runs/r3/run.json", "says repeat 2", "repeat index 2")
    _manifest(store, "r3", repeat=1000000, replay__repeat=1000000)
    out = sdbctl("replay", "--resume", "r3", "--model", "sim:renewal@v2")  # refused at once, never run
    assert_one_line_error(out, "r3", "meta.replay", "at most")
    _manifest(store, "r3", repeat=3, replay__repeat=3)
    assert sdbctl("replay", "--resume", "r3", "--model", "sim:renewal@v2").returncode == 0
