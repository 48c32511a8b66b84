"""Runs on object storage: every command against ``s3://bucket/prefix`` on a real S3-compatible server
(moto's server mode on 127.0.0.1), and the server stopped and restarted under a writer."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, assert_one_line_error, wait_until
from tests.llm_server import LLMServer
from tests.s3_server import S3Server


def _query(sdbctl: CLI, env: dict[str, str], sql: str) -> list[dict[str, Any]]:
    out = sdbctl("query", sql, "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with S3Server() as server:  # with an empty bucket "runs"
        server.empty_bucket("runs")
        yield server


STORE = "s3://runs/team-a"


def test_every_command_works_on_an_s3_store(sdbctl: CLI, tmp_path: Path, s3: S3Server) -> None:
    env = {**s3.env, "SDB_STORE": STORE}
    assert sdbctl("record", "contract-renewal", "-n", "12", "--run-id", "base", env=env).returncode == 0
    keys = s3.keys("runs")
    assert "team-a/runs/base/run.json" in keys and any(k.startswith("team-a/runs/base/events-") for k in keys)
    assert not (tmp_path / ".sdb").exists()  # nothing local: the bucket is the store
    runs = json.loads(sdbctl("runs", "--json", env=env).stdout)
    assert [(r["run_id"], r["status"], r["sessions"]) for r in runs] == [("base", "complete", 12)]
    shown = sdbctl("show", "base", "--json", "--limit", "0", env=env)
    assert shown.returncode == 0 and len(json.loads(shown.stdout)) == runs[0]["events"]
    counted = json.loads(
        sdbctl("query", "SELECT count(*) AS n FROM events WHERE kind = 'llm'", "--json", env=env).stdout
    )
    assert counted[0]["n"] > 0
    out = sdbctl("replay", "base", "--model", "sim:renewal@v2", "--run-id", "cand", "--json", env=env)
    assert out.returncode == 0, out.stderr
    same = json.loads(sdbctl("replay", "base", "--model", "recorded", "--json", env=env).stdout)
    assert same["divergences"] == 0 and same["status"] == "complete"
    diff = sdbctl("diff", "base", "cand", "--json", env=env)
    assert diff.returncode == 0 and json.loads(diff.stdout)["summary"]["steps_compared"] > 0
    assert any(k.startswith("team-a/diffs/base..cand/divergences") for k in s3.keys("runs"))
    saved = json.loads(sdbctl("query", "SELECT count(*) AS n FROM divergences", "--json", env=env).stdout)
    assert saved[0]["n"] == len(json.loads(diff.stdout)["divergences"])
    assert sdbctl("gate", "cand", env=env).returncode in (0, 1)
    assert sdbctl("export", "base", "--out", "base.jsonl", env=env).returncode == 0
    assert len((tmp_path / "base.jsonl").read_text().splitlines()) == runs[0]["events"]
    # --s3-endpoint instead of AWS_ENDPOINT_URL, --store instead of SDB_STORE
    flag = {k: v for k, v in s3.env.items() if k != "AWS_ENDPOINT_URL"}
    listed = sdbctl("--s3-endpoint", s3.endpoint, "runs", "--store", STORE, "--json", env=flag)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == sorted(["base", "cand", same["run_id"]])


def test_bad_s3_stores_are_one_line_errors(sdbctl: CLI, s3: S3Server) -> None:
    assert_one_line_error(sdbctl("runs", "--store", "s3://no-such-bucket/x", env=s3.env), "bucket 'no-such-bucket'")
    assert_one_line_error(sdbctl("runs", "--store", "s3://runs/empty", env=s3.env), "s3://runs/empty", "no such prefix")
    assert_one_line_error(sdbctl("runs", "--store", "s3://", env=s3.env), "no bucket")
    started = time.monotonic()  # a missing bucket is not a transient error: no minute of retries
    out = sdbctl("record", "contract-renewal", "-n", "2", "--store", "s3://no-such-bucket/x", env=s3.env)
    assert time.monotonic() - started < 20
    assert_one_line_error(out, "s3://no-such-bucket/x")


def test_a_server_restart_mid_write_completes_after_retries(sdbctl: CLI, s3: S3Server) -> None:
    env = {**s3.env, "SDB_STORE": STORE, "SDB_S3_RETRY_SECONDS": "30"}
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base", env=env).returncode == 0
    expected = json.loads(sdbctl("replay", "base", "--model", "recorded", "--json", env=env).stdout)["steps"]
    with LLMServer() as model:
        model.delay = 0.03  # a replay of a few seconds, flushing a part every second

        def outage() -> None:
            wait_until(lambda: any("/runs/slow/events-" in k for k in s3.keys("runs")), 60, "a part written")
            s3.stop()  # mid-run: parts and the manifest cannot be written for 3 s
            time.sleep(3)  # the outage itself: its length is what is tested
            s3.start()

        cut = threading.Thread(target=outage)
        cut.start()
        out = sdbctl(
            "replay", "base", "--model", "openai:m", "--base-url", model.url, "--concurrency", "1",
            "--run-id", "slow", "--json", env={**env, "OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        cut.join()
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "complete" and summary["steps_done"] == expected
    rows = _query(
        sdbctl, env, "SELECT session_id, seq, count(*) AS n FROM events WHERE run_id = 'slow' GROUP BY ALL HAVING n > 1"
    )
    assert rows == []  # no event written twice
    llm = json.loads(
        sdbctl(
            "query", "SELECT count(*) AS n FROM events WHERE run_id = 'slow' AND kind = 'llm'", "--json", env=env
        ).stdout
    )
    assert llm[0]["n"] == expected and max(model.requests.values()) == 1  # every step, each asked once


def test_an_outage_longer_than_the_retries_leaves_a_partial_run_that_resumes(sdbctl: CLI, s3: S3Server) -> None:
    env = {**s3.env, "SDB_STORE": STORE, "SDB_S3_RETRY_SECONDS": "1"}
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base", env=env).returncode == 0
    expected = json.loads(sdbctl("replay", "base", "--model", "recorded", "--json", env=env).stdout)["steps"]
    with LLMServer() as model:
        # 99 steps, about 20 s: the outage below starts well before the replay could end, also on a loaded
        # machine (at 0.1 s a fresh-clone run once saw the replay end before the outage began)
        model.delay = 0.2

        def outage() -> None:
            wait_until(lambda: any("/runs/cut/events-" in k for k in s3.keys("runs")), 60, "a part written")
            s3.stop()
            time.sleep(4)  # longer than the 1 s of retries
            s3.start()
            model.delay = 0  # the replay has failed by now: the resume need not wait

        cut = threading.Thread(target=outage)
        cut.start()
        failed = sdbctl(
            "replay", "base", "--model", "openai:m", "--base-url", model.url, "--concurrency", "1",
            "--run-id", "cut", env={**env, "OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        cut.join()
        assert_one_line_error(failed, "cut")
        runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json", env=env).stdout)}
        assert runs["cut"]["status"] == "partial"  # readable, and says so
        named = ["-m", "openai:m", "--base-url", model.url]  # a resume names the model again
        done = sdbctl("replay", "--resume", "cut", *named, "--json", env={**env, "OPENAI_API_KEY": "sk-test"})
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "complete"
    rows = _query(
        sdbctl,
        env,
        "SELECT count(*) AS n, count(DISTINCT (session_id, seq)) AS d FROM events "
        "WHERE run_id = 'cut' AND kind = 'llm'",
    )
    assert rows[0]["n"] == rows[0]["d"] == expected  # every step once: nothing lost, nothing twice
    assert max(model.requests.values()) == 1  # answers lost with the failed parts came from the cache


def test_small_objects_go_up_in_one_put_and_large_ones_in_parts(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A manifest is one PUT (no multipart round trips); a part above the SDK's 5 MB threshold goes up as a
    multipart upload. Both read back byte for byte."""
    from sdbctl.sdb.store import Location

    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO, logger="werkzeug")
    loc = Location.parse("s3://runs/sizes")
    small, large = b'{"run_id": "x"}', bytes(range(256)) * (12 * 4096)  # 15 bytes and 12 MiB
    loc.write_bytes(loc.path("small.json"), small)
    loc.write_bytes(loc.path("large.bin"), large)
    assert loc.read_bytes(loc.path("small.json")) == small
    assert loc.read_bytes(loc.path("large.bin")) == large
    assert not s3.client().list_multipart_uploads(Bucket="runs").get("Uploads")  # none left open
    requests = [r.getMessage() for r in caplog.records if "/runs/sizes/" in r.getMessage()]
    assert not any("small.json?uploads" in r for r in requests)
    assert any("large.bin?uploads" in r for r in requests)


# -- one writer per run on S3: the lock object -----------------------------------------------------

LOCK_KEY = "team-a/runs/{}/.writer.lock"
HOLDER = """
import sys
import sdbctl.sdb.store as store
from sdbctl.sdb.store import RunWriter, Store
store.HEARTBEAT_SECONDS = float(sys.argv[2])
writer = RunWriter.create(Store.open(sys.argv[1], must_exist=False), "held", recorder="sdk")
print("ready", flush=True)
sys.stdin.readline()
writer.close("partial")
print("closed", flush=True)
"""


def _planted_lock(s3: S3Server, run_id: str, *, age: float) -> bytes:
    """A lock object of a writer on another host, written now, whose own clock says ``age`` seconds ago."""
    import datetime as dt

    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    body = json.dumps({"host": "elsewhere", "pid": 4242, "token": "theirs", "time": when.isoformat()}).encode()
    s3.client().put_object(Bucket="runs", Key=LOCK_KEY.format(run_id), Body=body)
    return body


def _lock_body(s3: S3Server, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(s3.client().get_object(Bucket="runs", Key=LOCK_KEY.format(run_id))["Body"].read())
    return body


def test_a_live_writer_on_s3_keeps_its_run_and_its_heartbeat_keeps_its_lock_fresh(
    sdbctl: CLI, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import sys

    from sdbctl.sdb import store as sdb_store
    from sdbctl.sdb.store import RunLocked, RunWriter, Store

    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, STORE, "0.2"],
        env={**os.environ, **s3.env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        assert _lock_body(s3, "held")["pid"] == holder.pid
        out = sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "held", env={**s3.env, "SDB_STORE": STORE})
        assert_one_line_error(out, "run 'held'", f"being written by process {holder.pid}")
        # from here on, in this process, a lock 1.5 s old is stale (the command above, a process of its
        # own before the tests ran in process, kept the default, as the user's command does); the
        # holder beats every 0.2 s, so a busy machine may delay a beat by a second and the lock stays fresh
        monkeypatch.setattr(sdb_store, "HEARTBEAT_SECONDS", 0.5)
        first = _lock_body(s3, "held")["time"]
        time.sleep(2.0)  # ten of the holder's beats: without them the lock would be stale by now
        assert _lock_body(s3, "held")["time"] > first  # refreshed
        store = Store.open(STORE)
        with pytest.raises(RunLocked, match=rf"run 'held' in store {STORE} is being written by process {holder.pid}"):
            RunWriter.reopen(store, "held")
        assert store.manifest("held").events == 0 and _lock_body(s3, "held")["pid"] == holder.pid  # untouched
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
    finally:
        holder.kill()
        holder.wait()
    assert LOCK_KEY.format("held") not in s3.keys("runs")  # released on close
    again = RunWriter.reopen(store, "held")  # the run is free again
    assert _lock_body(s3, "held")["pid"] == os.getpid()
    again.close()
    closed = store.manifest("held")  # closed by its new writer; with no events it is never complete
    assert (closed.status, closed.interrupted) == ("partial", "no events") and LOCK_KEY.format("held") not in s3.keys(
        "runs"
    )


def test_a_stale_lock_on_s3_is_taken_over_and_a_fresh_one_is_not(
    sdbctl: CLI, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stale and fresh by the object store's own clock (the lock object's Last-Modified against the
    server's Date), never by the clock of the holder or of the reader."""
    from sdbctl.sdb import store as sdb_store

    env = {**s3.env, "SDB_STORE": STORE}
    monkeypatch.setattr(sdb_store, "HEARTBEAT_SECONDS", 0.5)  # in this process: stale 1.5 s after a write
    # its writer was killed 3 s ago, nothing refreshed it since; its clock, an hour ahead, says "just now"
    _planted_lock(s3, "orphan", age=-3600)
    time.sleep(3)
    out = sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "orphan", env=env)
    assert out.returncode == 0, out.stderr
    runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json", env=env).stdout)}
    assert runs["orphan"]["status"] == "complete" and runs["orphan"]["events"] > 0
    assert LOCK_KEY.format("orphan") not in s3.keys("runs")  # the new writer's lock, released
    # a live writer elsewhere, refreshed just now by the server's clock; its own clock is an hour behind.
    # Stale only after 15 s here: a loaded CI machine may take seconds between the plant and the check
    monkeypatch.setattr(sdb_store, "HEARTBEAT_SECONDS", 5.0)
    fresh = _planted_lock(s3, "taken", age=3600)
    out = sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "taken", env=env)
    assert_one_line_error(out, "run 'taken'", "s3://runs/team-a", "process 4242 on elsewhere")
    assert s3.client().get_object(Bucket="runs", Key=LOCK_KEY.format("taken"))["Body"].read() == fresh
    assert not any(k.startswith("team-a/runs/taken/") and not k.endswith(".writer.lock") for k in s3.keys("runs"))


def test_without_boto3_an_s3_store_is_read_but_not_written(
    sdbctl: CLI, sdbctl_process: CLI, s3: S3Server, tmp_path: Path
) -> None:
    """In processes of their own: this one has imported boto3 already."""
    env = {**s3.env, "SDB_STORE": STORE}
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "base", env=env).returncode == 0
    shadow = tmp_path / "no-boto3"
    (shadow / "boto3").mkdir(parents=True)
    (shadow / "boto3" / "__init__.py").write_text("raise ImportError(\"No module named 'boto3'\")\n")
    env["PYTHONPATH"] = str(shadow)
    out = sdbctl_process("record", "contract-renewal", "-n", "2", "--run-id", "nolock", env=env)
    assert_one_line_error(out, "run 'nolock'", "pip install 'sdbctl[s3]'")
    assert not any("/runs/nolock/" in k for k in s3.keys("runs"))  # nothing written unlocked
    listed = sdbctl_process("runs", "--json", env=env)  # reading needs no lock
    assert listed.returncode == 0 and [r["run_id"] for r in json.loads(listed.stdout)] == ["base"]


def _one_event_batch(run_id: str) -> Any:
    from sdbctl.sdb.events import batch_from_columns

    row = [run_id, "s", 0, None, None, 0, "input", "agent", "", "x", None, None, "{}", 0, "ok", None, None, None, None]
    return batch_from_columns([[value] for value in row])


def test_a_writer_whose_s3_lock_was_taken_over_stops_and_leaves_the_new_lock(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdbctl.sdb import store as sdb_store
    from sdbctl.sdb.errors import SdbError
    from sdbctl.sdb.store import RunWriter, Store

    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sdb_store, "HEARTBEAT_SECONDS", 0.1)
    store = Store.open(STORE, must_exist=False)
    writer = RunWriter.create(store, "stolen", recorder="sdk")
    writer.write(_one_event_batch("stolen"))
    assert not writer.lock_lost
    theirs = _planted_lock(s3, "stolen", age=0)  # as if it had stalled and another writer took over
    wait_until(lambda: writer.lock_lost, 10, "the heartbeat finds its lock taken over")
    keys = s3.keys("runs")
    manifest = s3.client().get_object(Bucket="runs", Key="team-a/runs/stolen/run.json")["Body"].read()
    with pytest.raises(SdbError, match=r"run 'stolen' in store s3://runs/team-a: .*lost its writer lock") as raised:
        writer.write(_one_event_batch("stolen"))
    assert len(str(raised.value).splitlines()) == 1
    with pytest.raises(SdbError, match="lost its writer lock"):  # it cannot call the run complete either
        writer.close()
    writer.close("partial")
    assert s3.keys("runs") == keys  # no part, no manifest written after the lock was lost
    assert s3.client().get_object(Bucket="runs", Key="team-a/runs/stolen/run.json")["Body"].read() == manifest
    assert store.manifest("stolen").status == "partial" and store.manifest("stolen").events == 1
    # its release leaves the other writer's lock alone
    assert s3.client().get_object(Bucket="runs", Key=LOCK_KEY.format("stolen"))["Body"].read() == theirs


def test_a_replay_that_loses_its_s3_lock_stops_writing_and_exits_2(
    sdbctl: CLI, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: both writers PUT parts to the end and both exit 0."""
    from sdbctl.sdb import store as sdb_store

    env = {**s3.env, "SDB_STORE": STORE}
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "base", env=env).returncode == 0
    monkeypatch.setattr(sdb_store, "HEARTBEAT_SECONDS", 0.2)  # in this process: the replay's lock beats often

    def parts() -> list[str]:
        return [k for k in s3.keys("runs") if k.startswith("team-a/runs/stolen/events-")]

    seen: dict[str, list[str]] = {}
    with LLMServer() as model:
        model.delay = 0.1  # 99 steps, about 10 s, a part flushed every second

        def takeover() -> None:
            wait_until(lambda: parts(), 60, "a part written")
            _planted_lock(s3, "stolen", age=0)  # another writer took the run over
            seen["then"] = parts()

        thief = threading.Thread(target=takeover)
        thief.start()
        out = sdbctl(
            "replay", "base", "--model", "openai:m", "--base-url", model.url, "--concurrency", "1",
            "--run-id", "stolen", env={**env, "OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        thief.join()
    assert_one_line_error(out, "run 'stolen'", "lost its writer lock")
    # at most the part already on its way when the lock was taken; none after the next beat
    assert len(parts()) <= len(seen["then"]) + 1
    runs = {r["run_id"]: r for r in json.loads(sdbctl("runs", "--json", env=env).stdout)}
    assert runs["stolen"]["status"] == "partial"
    assert _lock_body(s3, "stolen")["token"] == "theirs"
