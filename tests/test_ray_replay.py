"""``sdbctl replay --executor ray`` on a local Ray instance started by the tests (2 CPUs): the same
results as the local executor, a global rate limit, a worker killed mid-replay, resume across
executors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, REPO, SDBCTL, cli_env, wait_until
from tests.llm_server import LLMServer

ray = pytest.importorskip("ray")  # in the dev extra: a missing Ray fails CI's "no skips" check


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a local Ray instance with 2 CPUs."""
    # the tests are not installed: workers find tests.ray_model (a py: model) through the checkout
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), before) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _start_replay(tmp_path: Path, model: LLMServer, run_id: str, *extra: str) -> subprocess.Popen[bytes]:
    """A one-call-at-a-time replay of ``base`` against ``model``, as a process to kill."""
    env = cli_env({"OPENAI_API_KEY": "sk-test", "XDG_CACHE_HOME": str(tmp_path / ".cache")})
    args = ["replay", "base", "-m", "openai:m", "--base-url", model.url, "--run-id", run_id, "--concurrency", "1"]
    return subprocess.Popen(
        [str(SDBCTL), *args, *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _shard_processes() -> list[str]:
    """Ray worker processes running a shard (Ray titles them after the task)."""
    out = subprocess.run(["pgrep", "-f", "ray::run_shard"], capture_output=True, text=True, check=False)
    return out.stdout.split()


def _actions(sdbctl: CLI, run_id: str) -> list[tuple[Any, ...]]:
    """What a replay proposed, independent of the order its steps were written in."""
    sql = (
        "SELECT e.session_id, e.step, e.name, e.digest, l.payload->>'$.replay.source_seq' AS src "
        "FROM events e JOIN events l ON l.run_id = e.run_id AND l.session_id = e.session_id AND l.seq = e.parent "
        f"WHERE e.run_id = '{run_id}' AND e.kind = 'action' ORDER BY ALL"
    )
    out = sdbctl("query", sql, "--json")
    assert out.returncode == 0, out.stderr
    return [tuple(r.values()) for r in json.loads(out.stdout)]


def _ray_replay(sdbctl: CLI, cluster: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = sdbctl("replay", *args, "--executor", "ray", "--address", cluster, "--json", env=env)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_ray_gives_the_local_executors_results(sdbctl: CLI, cluster: str, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "24", "--run-id", "base").returncode == 0
    local = json.loads(sdbctl("replay", "base", "-m", "sim:renewal@v2", "--run-id", "local", "--json").stdout)
    remote = _ray_replay(sdbctl, cluster, "base", "-m", "sim:renewal@v2", "--run-id", "onray", "--no-cache")
    assert remote["status"] == "complete" and remote["steps_done"] == local["steps_done"] > 0
    assert remote["divergences"] == local["divergences"]
    assert remote["sessions"] == local["sessions"]  # the shards' outcomes, gathered: the local ones
    assert _actions(sdbctl, "onray") == _actions(sdbctl, "local")  # the same digests, step for step
    parts = sorted(p.name for p in (tmp_path / ".sdb" / "runs" / "onray").glob("events-*.parquet"))
    assert len({p.split("-")[1] for p in parts}) >= 2  # written by several shards
    runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json").stdout)}
    assert runs["onray"]["events"] == runs["local"]["events"] and runs["onray"]["status"] == "complete"
    assert runs["onray"]["prompts"] == runs["local"]["prompts"]
    same = _ray_replay(sdbctl, cluster, "base", "-m", "recorded")
    assert same["divergences"] == 0 and same["steps_done"] == local["steps_done"]


def test_the_rate_limit_is_global_across_workers(sdbctl: CLI, cluster: str) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "4", "--run-id", "few").returncode == 0
    with LLMServer() as model:
        result = _ray_replay(
            sdbctl, cluster, "few", "-m", "openai:m", "--base-url", model.url, "--rpm", "300", "--workers", "2",
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        times = sorted(model.times)
    assert result["steps_done"] == len(times) >= 8
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    # 300 per minute is one call per 0.2 s for the whole cluster; per-worker limits would allow two calls
    # per 0.2 s, a mean gap of 0.1 s. The mean and the median say which, with room for a call that arrived
    # late on a machine busy with other tests (the limiter spaces the sending, the server sees the
    # arrivals): a first call late by 0.26 s once left a mean of 0.178 s and a median of 0.195 s
    assert (times[-1] - times[0]) / len(gaps) >= 0.15 and gaps[len(gaps) // 2] >= 0.15, gaps


def test_a_worker_killed_mid_replay_loses_no_step_and_asks_none_twice(
    sdbctl: CLI, sdbctl_process: CLI, cluster: str, tmp_path: Path
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base").returncode == 0
    asked = tmp_path / "asked.log"
    env = {"SDB_TEST_ASKED": str(asked), "SDB_TEST_KILL_AT": "20", "PYTHONPATH": str(REPO)}
    # a driver process of its own: the workers get the model's environment from the job that driver
    # starts (in this process Ray is up already, with the environment it had then)
    args = ("base", "-m", "py:tests.ray_model:answer", "--run-id", "killed")
    result = _ray_replay(sdbctl_process, cluster, *args, env=env)
    assert (tmp_path / "asked.killed").exists()  # a worker process did die with SIGKILL
    keys = asked.read_text().splitlines()
    assert result["status"] == "complete" and result["steps_done"] == len(keys) > 20
    assert [k for k, n in Counter(keys).items() if n > 1] == []  # no step asked twice
    local = json.loads(sdbctl("replay", "base", "-m", "sim:renewal@v1", "--run-id", "ref", "--json").stdout)
    assert _actions(sdbctl, "killed") == _actions(sdbctl, "ref") and local["steps_done"] == len(keys)  # none lost


def test_a_local_replay_killed_resumes_on_ray(sdbctl: CLI, cluster: str, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base").returncode == 0
    with LLMServer() as model:
        model.delay = 0.05
        proc = _start_replay(tmp_path, model, "half")
        wait_until(lambda: model.total >= 25, 120, "25 answers asked for")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json").stdout)}
        assert runs["half"]["status"] == "partial"
        named = ["-m", "openai:m", "--base-url", model.url]  # a resume names the model again
        result = _ray_replay(sdbctl, cluster, "--resume", "half", *named, env={"OPENAI_API_KEY": "sk-test"})
        requests = dict(model.requests)
    # every step asked once, except the one call in flight when the process died (its answer, sent or
    # not, never reached the cache): one process at --concurrency 1 has at most one
    assert result["status"] == "complete" and sum(n - 1 for n in requests.values()) <= 1
    ref = json.loads(sdbctl("replay", "base", "-m", "recorded", "--json").stdout)
    assert len(_actions(sdbctl, "half")) == len(_actions(sdbctl, ref["run_id"]))  # nothing lost
    assert len(requests) == ref["steps_done"]


def test_a_ray_replay_killed_resumes_locally(sdbctl: CLI, cluster: str, tmp_path: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base").returncode == 0
    with LLMServer() as model:
        model.delay = 0.05
        proc = _start_replay(tmp_path, model, "cut", "--executor", "ray", "--address", cluster)
        parts = tmp_path / ".sdb" / "runs" / "cut"
        wait_until(lambda: list(parts.glob("events-w*.parquet")), 120, "a shard has written a part")
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies: Ray ends its job, the parts stay
        proc.wait()
        deadline = time.monotonic() + 30
        while _shard_processes() and time.monotonic() < deadline:  # Ray reaps the job's workers
            time.sleep(0.1)
        runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json").stdout)}
        assert runs["cut"]["status"] == "partial"
        named = ["-m", "openai:m", "--base-url", model.url]  # a resume names the model again
        done = sdbctl("replay", "--resume", "cut", *named, "--json", env={"OPENAI_API_KEY": "sk-test"})
        assert done.returncode == 0, done.stderr
        requests = dict(model.requests)
    # asked again: at most the calls in flight when the job died, one per worker at --concurrency 1
    assert json.loads(done.stdout)["status"] == "complete" and sum(n - 1 for n in requests.values()) <= 2
    ref = json.loads(sdbctl("replay", "base", "-m", "recorded", "--json").stdout)
    assert len(_actions(sdbctl, "cut")) == len(_actions(sdbctl, ref["run_id"]))  # nothing lost, nothing twice
