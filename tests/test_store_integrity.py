"""A store that was tampered with or raced: parts checked against the manifest before a run is read,
one writer per run, empty runs of dead writers that give their id back, and saved diffs whose folder
names one pair of runs only. Every failure is exit 2 with one line, never exit 1 (FAIL) for a damaged
store."""

from __future__ import annotations

import json
import shutil
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
from sdbctl.sdb.store import Store
from sdbctl.sdb.store.layout import diff_key
from sdbctl.sdb.store.lock import RunLocked
from sdbctl.sdb.store.views import connect, run_query
from sdbctl.sdb.store.writer import RunWriter
from tests.conftest import CLI, SDBCTL, _cli_env, assert_one_line_error
from tests.llm_server import LLMServer
from tests.s3_server import S3Server


def _run(store: Path, run_id: str, *, sessions: int = 12, parts: int = 3, changed: bool = False) -> None:
    """A closed-loop run of ``parts`` parts: per session an llm call, its refund and the refund's effect."""
    with Recorder(store=store, run_id=run_id, handle_signals=False) as rec:
        for s in range(sessions):
            sess = rec.session(f"s{s:03d}")
            llm = sess.llm({"messages": [{"role": "user", "content": f"s{s}"}]}, {}, model="m", step="call-0")
            amount = s + (1 if changed and s % 2 else 0)
            act = sess.action("refund", {"order": f"O-{s}", "amount": amount}, step="call-0", parent=llm)
            sess.effect("refund", {"ok": True}, parent=act)
            if s % (sessions // parts) == sessions // parts - 1:
                rec.flush()


@pytest.fixture
def pair(store: Path) -> Path:
    """Runs ``base`` and ``cand`` (half the refunds changed), each of 3 parts; diff and gate work."""
    _run(store, "base")
    _run(store, "cand", changed=True)
    assert sorted(p.name for p in (store / "runs" / "base").glob("events-*.parquet")) == [
        "events-00000.parquet",
        "events-00001.parquet",
        "events-00002.parquet",
    ]
    return store / "runs" / "base"


def _reads(sdbctl: CLI) -> dict[str, subprocess.CompletedProcess[str]]:
    return {
        "show": sdbctl("show", "base", "--json"),
        "export": sdbctl("export", "base"),
        "diff": sdbctl("diff", "base", "cand", "--json"),
        "gate": sdbctl("gate", "cand", "--base", "base"),
    }


def test_an_intact_run_reads_and_its_manifest_lists_every_part(sdbctl: CLI, pair: Path) -> None:
    manifest = json.loads((pair / "run.json").read_text())
    listed = {p["name"]: p for p in manifest["part_files"]}
    assert sorted(listed) == sorted(p.name for p in pair.glob("events-*.parquet"))
    assert sum(p["rows"] for p in listed.values()) == manifest["events"] == 36
    assert all(len(p["xxh3"]) == 16 and p["size"] == (pair / n).stat().st_size for n, p in listed.items())
    for name, out in _reads(sdbctl).items():
        assert out.returncode in (0, 1) and "Traceback" not in out.stderr, (name, out.stderr)


def test_a_deleted_part_is_exit_2_naming_the_run_and_the_part(sdbctl: CLI, pair: Path) -> None:
    (pair / "events-00001.parquet").unlink()
    for out in _reads(sdbctl).values():
        assert_one_line_error(out, "run 'base'", "events-00001.parquet", "missing")


def test_a_bit_flipped_part_is_exit_2_naming_the_run_and_the_part(sdbctl: CLI, pair: Path) -> None:
    part = pair / "events-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    for out in _reads(sdbctl).values():
        assert_one_line_error(out, "run 'base'", "events-00001.parquet", "checksum")


def test_an_extra_or_replaced_part_is_exit_2(sdbctl: CLI, pair: Path, store: Path) -> None:
    cand = store / "runs" / "cand"
    shutil.copy(cand / "events-00000.parquet", pair / "events-00003.parquet")  # a valid part, not this run's
    assert_one_line_error(sdbctl("show", "base"), "run 'base'", "events-00003.parquet", "not in its manifest")
    (pair / "events-00003.parquet").unlink()
    shutil.copy(cand / "events-00002.parquet", pair / "events-00002.parquet")  # same rows, other bytes
    assert_one_line_error(sdbctl("diff", "base", "cand"), "run 'base'", "events-00002.parquet")


def test_a_damaged_run_stops_a_store_wide_read_but_not_one_scoped_to_other_runs(pair: Path, store: Path) -> None:
    _run(store, "other")
    (store / "runs" / "other" / "events-00000.parquet").unlink()
    with pytest.raises(SdbError, match=r"run 'other' is damaged: part events-00000.parquet is missing"):
        connect(Store.open(store))  # every run is in `events`: no silent short read of any
    con = connect(Store.open(store), runs=["base", "cand"])
    assert run_query(con, "SELECT DISTINCT run_id FROM events ORDER BY 1")[1] == [("base",), ("cand",)]


def test_a_run_written_before_part_lists_is_checked_on_its_count(sdbctl: CLI, pair: Path) -> None:
    manifest = json.loads((pair / "run.json").read_text())
    manifest["part_files"] = None  # as sdbctl wrote it before parts were listed
    (pair / "run.json").write_text(json.dumps(manifest))
    assert sdbctl("show", "base", "--json").returncode == 0
    (pair / "events-00000.parquet").unlink()
    for out in _reads(sdbctl).values():
        assert_one_line_error(out, "run 'base'", "3", "2 part(s) on disk")


def test_a_partial_runs_unlisted_last_part_is_read_then_adopted_on_resume(store: Path) -> None:
    _run(store, "p", parts=2)
    run = store / "runs" / "p"
    manifest = json.loads((run / "run.json").read_text())
    manifest["status"], manifest["finished"] = "partial", None
    dead_writer_saw = manifest["part_files"].pop()  # the writer died between the part and the manifest
    manifest["parts"] -= 1
    (run / "run.json").write_text(json.dumps(manifest))
    count = "SELECT count(*) FROM events"
    assert run_query(connect(Store.open(store), "p"), count)[1][0][0] == 36  # whole as a file: read
    with Recorder(store=store, run_id="p", resume=True, handle_signals=False) as rec:
        rec.session("late").input("x", 1)
    after = Store.open(store).manifest("p")
    assert after.status == "complete" and after.part_files is not None
    assert [p.name for p in after.part_files] == [f"events-0000{i}.parquet" for i in range(3)]
    assert after.part_files[1].model_dump() == dead_writer_saw  # adopted with the checksum its writer had
    assert after.events == run_query(connect(Store.open(store), "p"), count)[1][0][0] == 37


def test_a_partial_run_with_a_gap_in_its_parts_is_refused(sdbctl: CLI, store: Path) -> None:
    _run(store, "p", parts=3)
    run = store / "runs" / "p"
    manifest = json.loads((run / "run.json").read_text())
    manifest["status"], manifest["finished"] = "partial", None
    manifest["part_files"] = manifest["part_files"][:1]  # parts 1 and 2 unlisted: 1 then deleted
    (run / "run.json").write_text(json.dumps(manifest))
    (run / "events-00001.parquet").unlink()
    assert_one_line_error(sdbctl("show", "p"), "run 'p'", "events-00001.parquet", "missing")


# -- one writer per run ----------------------------------------------------------------------------


def _killed_replay(store: Path, server: LLMServer) -> None:
    """A replay ``killed`` of ``src`` SIGKILLed midway: a partial run with some steps done."""
    cmd = [str(SDBCTL), "replay", "src", "-m", "openai:x", "--base-url", server.url, "--concurrency", "2"]
    proc = subprocess.Popen([*cmd, "--run-id", "killed", "--no-cache", "--store", str(store)], env=_cli_env())
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
        resume = [str(SDBCTL), "replay", "--resume", "killed", "--store", str(store), "--json"]
        procs = [
            subprocess.Popen(resume, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
            cwd=tmp_path, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    manifest = Store.open(tmp_path / ".sdb").manifest("x")
    assert manifest.status == "complete" and manifest.interrupted is None


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
    empty_but_complete = Recorder(store=store, run_id="empty", handle_signals=False)
    empty_but_complete.close()
    assert_one_line_error(sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "empty"), "already exists")


# -- saved diffs -----------------------------------------------------------------------------------


def test_diffs_of_different_pairs_never_share_a_folder(sdbctl: CLI, store: Path) -> None:
    for run_id, model in (("a", "v1"), ("b..c", "v2"), ("a..b", "v1"), ("c", "v2")):
        args = ("record", "contract-renewal", "-n", "4", "-m", f"sim:renewal@{model}", "--run-id", run_id)
        assert sdbctl(*args).returncode == 0
    assert diff_key("a", "b..c") != diff_key("a..b", "c")
    for base, cand in (("a", "b..c"), ("a..b", "c")):
        out = sdbctl("diff", base, cand, "--json")
        assert out.returncode == 0, out.stderr
    folders = sorted(p.name for p in (store / "diffs").iterdir())
    assert folders == sorted([diff_key("a", "b..c"), diff_key("a..b", "c")]) and len(folders) == 2
    pairs = "SELECT DISTINCT base_run, candidate_run FROM divergences ORDER BY ALL"
    assert json.loads(sdbctl("query", pairs, "--json").stdout) == [
        {"base_run": "a", "candidate_run": "b..c"},
        {"base_run": "a..b", "candidate_run": "c"},
    ]
    # a folder as earlier versions named it is still read by the view
    (store / "diffs" / diff_key("a..b", "c")).rename(store / "diffs" / "a..b..c")
    assert len(json.loads(sdbctl("query", pairs, "--json").stdout)) == 2
    assert diff_key("base", "cand") == "base..cand"  # ids without '..': the folder earlier versions wrote


# -- S3 --------------------------------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        client = server.client()
        if "runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket="runs")
        for key in server.keys("runs"):
            client.delete_object(Bucket="runs", Key=key)
        yield server


def test_a_deleted_or_replaced_part_on_s3_is_exit_2(sdbctl: CLI, s3: S3Server) -> None:
    env = {**s3.env, "SDB_STORE": "s3://runs/team-b"}
    for run_id in ("one", "two"):
        assert sdbctl("record", "contract-renewal", "-n", "3", "--run-id", run_id, env=env).returncode == 0
    assert sdbctl("show", "one", env=env).returncode == 0
    client = s3.client()
    part = next(k for k in s3.keys("runs") if k.startswith("team-b/runs/one/events-"))
    other = next(k for k in s3.keys("runs") if k.startswith("team-b/runs/two/events-"))
    body = client.get_object(Bucket="runs", Key=other)["Body"].read()
    client.put_object(Bucket="runs", Key=part, Body=body)
    assert_one_line_error(sdbctl("show", "one", env=env), "run 'one'", part.rsplit("/", 1)[-1])
    client.delete_object(Bucket="runs", Key=part)
    assert_one_line_error(sdbctl("show", "one", env=env), "run 'one'", part.rsplit("/", 1)[-1], "missing")


def test_on_s3_an_empty_run_gives_its_id_back_once_its_writer_is_gone(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
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
    from sdbctl.sdb.events.schema import batch_from_columns

    row = [run_id, "s", 0, None, None, 0, "input", "agent", "", "x", None, None, "{}", 0, "ok", None, None, None]
    return batch_from_columns([[value] for value in row])


# -- one writer per run on S3 ----------------------------------------------------------------------


def test_a_second_writer_of_an_s3_run_is_refused_until_the_first_closes(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
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
    from sdbctl.sdb.store import Store
    from sdbctl.sdb.store.writer import RunWriter
    writer = RunWriter.create(Store.open(sys.argv[1], must_exist=False), "gone", recorder="sdk")
    print("ready", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not Path("/proc/sys/kernel/random/boot_id").exists(), reason="needs Linux's /proc")
def test_the_s3_lock_of_a_killed_writer_of_this_machine_is_taken_over_at_once(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    proc = subprocess.Popen(
        [sys.executable, "-c", S3_KILLED_WRITER, "s3://runs/team-e"],
        env={**_cli_env(), **s3.env}, stdout=subprocess.PIPE, text=True,
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
