"""One writer per run, locally and on S3: a second writer (or a second resume) refused with one line
while the first lives, a dead writer's lock given back (at once for a process of this machine, after
its heartbeats for another's), and the empty run of a dead writer that gives its id back."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.store import RunLocked, RunWriter, Store, connect, run_query
from tests.conftest import CLI, SDBCTL, assert_one_line_error, cli_env
from tests.llm_server import LLMServer
from tests.s3_server import S3Server

# -- one writer per run ----------------------------------------------------------------------------


def _killed_replay(store: Path, server: LLMServer) -> None:
    """A replay ``killed`` of ``src`` SIGKILLed midway: a partial run with some steps done."""
    cmd = [str(SDBCTL), "replay", "src", "-m", "openai:x", "--base-url", server.url, "--concurrency", "2"]
    proc = subprocess.Popen([*cmd, "--run-id", "killed", "--no-cache", "--store", str(store)], env=cli_env())
    deadline = time.monotonic() + 60
    while not (store / "runs" / "killed" / "run.json").exists() or Store.open(store).manifest("killed").events < 20:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Store.open(store).manifest("killed").status == "partial"


def test_two_resumes_of_one_run_at_once_write_every_event_once(sdbctl: CLI, store: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "30", "--run-id", "src").returncode == 0
    with LLMServer(delay=0.05) as server:
        _killed_replay(store, server)  # its lock died with it: the run resumes
        resume = [str(SDBCTL), "replay", "--resume", "killed", "-m", "openai:x", "--base-url", server.url]
        resume += ["--store", str(store), "--json"]
        procs = [
            subprocess.Popen(resume, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outs = [(p, *p.communicate(timeout=120)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in outs)
    assert codes == [0, 2], [err for _, _, err in outs]
    loser = next(err for p, _, err in outs if p.returncode == 2)
    assert len(loser.strip().splitlines()) == 1 and "run 'killed'" in loser and "Traceback" not in loser
    con = connect(Store.open(store), "killed")
    twice = run_query(con, "SELECT session_id, seq FROM events GROUP BY ALL HAVING count(*) > 1")[1]
    steps = "SELECT count(*) FROM events WHERE kind = 'llm'"
    assert twice == []
    assert run_query(con, steps)[1] == run_query(connect(Store.open(store), "src"), steps)[1]
    assert Store.open(store).manifest("killed").status == "complete"


def test_a_second_writer_of_a_run_is_refused_until_the_first_closes(store: Path) -> None:
    rec = Recorder(store=store, run_id="busy", handle_signals=False)
    rec.session("s").input("x", 1)
    rec.flush()
    rec.close("partial")
    first = RunWriter.reopen(Store.open(store), "busy")
    with pytest.raises(RunLocked, match=r"run 'busy' .* is being written by process"):
        Recorder(store=store, run_id="busy", resume=True, handle_signals=False)
    with pytest.raises(RunLocked):
        RunWriter.create(Store.open(store), "busy", recorder="sdk")
    first.close("partial")
    RunWriter.reopen(Store.open(store), "busy").close()
    with pytest.raises(SdbError, match="run 'busy' is complete"):
        RunWriter.reopen(Store.open(store), "busy")


# -- empty runs of dead writers --------------------------------------------------------------------


def test_a_port_in_use_leaves_no_run_that_blocks_its_id(tmp_path: Path, sdbctl: CLI) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = sdbctl("proxy", "--port", str(port), "--run-id", "x", "--upstream", "http://127.0.0.1:9/v1")
    assert first.returncode == 2 and "Traceback" not in first.stderr
    assert first.stderr.splitlines()[0].startswith("sdbctl: error: proxy: cannot listen on")
    with LLMServer() as upstream:
        proc = subprocess.Popen(
            [str(SDBCTL), "proxy", "--upstream", upstream.url, "--run-id", "x"],
            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    manifest = Store.open(tmp_path / ".sdb").manifest("x")
    # closed by its writer, with no request through it: an empty run is never complete
    assert (manifest.status, manifest.events, manifest.interrupted) == ("partial", 0, "no events")


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from sdbctl.recorders.sdk import Recorder
    rec = Recorder(store=sys.argv[1], run_id="imp", recorder="otel", handle_signals=False)
    open(sys.argv[2], "a").write("truth line of no event\\n")
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_an_empty_run_of_a_killed_writer_gives_its_id_back(tmp_path: Path, store: Path, sdbctl: CLI) -> None:
    side = store / "runs" / "imp" / "truth.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(store), str(side)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # alive, it keeps the id: the second writer is refused
        assert_one_line_error(sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "imp"), "run 'imp'")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert Store.open(store).manifest("imp").status == "partial"
    out = sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "imp")
    assert out.returncode == 0, out.stderr
    manifest = Store.open(store).manifest("imp")
    assert manifest.status == "complete" and manifest.events > 0 and manifest.recorder != "otel"
    assert not side.exists() or b"no event" not in side.read_bytes()  # the dead writer's files are gone


def test_a_run_with_events_keeps_its_id(store: Path, sdbctl: CLI) -> None:
    rec = Recorder(store=store, run_id="kept", handle_signals=False)
    rec.session("s").input("x", 1)
    rec.close("partial")
    assert_one_line_error(sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "kept"), "already exists")
    empty = Recorder(store=store, run_id="empty", handle_signals=False)
    empty.close()  # never complete with no event: its id holds nothing, and the next run takes it
    assert Store.open(store).manifest("empty").status == "partial"
    assert sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "empty").returncode == 0
    assert Store.open(store).manifest("empty").status == "complete"


# -- on S3 -----------------------------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The server, with an empty bucket ``runs``; its endpoint and credentials are this process's."""
    with S3Server() as server:
        server.empty_bucket("runs")
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield server


def test_on_s3_an_empty_run_gives_its_id_back_once_its_writer_is_gone(s3: S3Server) -> None:
    store = Store.open("s3://runs/team-c", must_exist=False)
    RunWriter.create(store, "x", recorder="proxy").close("partial", interrupted="proxy did not start")
    again = RunWriter.create(store, "x", recorder="proxy")  # its writer closed it: the id is free
    again.write(_one_event_batch("x"))
    again.close()
    RunWriter.create(store, "killed", recorder="otel")  # never closed, and its lock gone with it
    RunWriter.create(store, "killed", recorder="otel").close()  # the empty run does not keep its id
    with pytest.raises(SdbError, match="run 'x' already exists"):
        RunWriter.create(store, "x", recorder="proxy")


def _one_event_batch(run_id: str) -> pa.RecordBatch:
    from sdbctl.sdb.events import batch_from_columns

    row = [run_id, "s", 0, None, None, 0, "input", "agent", "", "x", None, None, "{}", 0, "ok", None, None, None, None]
    return batch_from_columns([[value] for value in row])


def test_a_second_writer_of_an_s3_run_is_refused_until_the_first_closes(s3: S3Server) -> None:
    store = Store.open("s3://runs/team-d", must_exist=False)
    first = RunWriter.create(store, "busy", recorder="sdk")
    first.write(_one_event_batch("busy"))
    assert "team-d/runs/busy/.writer.lock" in s3.keys("runs")
    with pytest.raises(RunLocked, match=r"run 'busy' in store s3://runs/team-d is being written by process \d+"):
        RunWriter.reopen(store, "busy")
    with pytest.raises(RunLocked, match="run 'busy'"):
        RunWriter.create(store, "busy", recorder="sdk")
    assert store.manifest("busy").events == 1  # the refused writers wrote nothing
    first.close("partial")
    assert "team-d/runs/busy/.writer.lock" not in s3.keys("runs")
    second = RunWriter.reopen(store, "busy")
    second.write(_one_event_batch("busy"))
    second.close()
    manifest = store.manifest("busy")
    assert manifest.status == "complete" and manifest.events == 2 and manifest.parts == 2


S3_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from sdbctl.sdb.store import RunWriter, Store
    writer = RunWriter.create(Store.open(sys.argv[1], must_exist=False), "gone", recorder="sdk")
    print("ready", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not Path("/proc/sys/kernel/random/boot_id").exists(), reason="needs Linux's /proc")
def test_the_s3_lock_of_a_killed_writer_of_this_machine_is_taken_over_at_once(s3: S3Server) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", S3_KILLED_WRITER, "s3://runs/team-e"],
        env={**cli_env(), **s3.env}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(RunLocked, match=rf"run 'gone' .* by process {proc.pid} "):
            RunWriter.reopen(Store.open("s3://runs/team-e"), "gone")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert "team-e/runs/gone/.writer.lock" in s3.keys("runs")  # SIGKILL: nothing released it
    started = time.monotonic()
    writer = RunWriter.reopen(Store.open("s3://runs/team-e"), "gone")  # its process is gone: no 30 s wait
    assert time.monotonic() - started < 10
    writer.write(_one_event_batch("gone"))
    writer.close()
    assert Store.open("s3://runs/team-e").manifest("gone").status == "complete"
