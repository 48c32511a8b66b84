"""A store that was tampered with: parts checked against the manifest before a run is read (locally and
on S3), and saved diffs whose folder names one pair of runs only. Every failure is exit 2 with one
line, never exit 1 (FAIL) for a damaged store. One writer per run is ``test_store_writers.py``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.store import Store, connect, diff_key, run_query
from tests.conftest import CLI, Outcome, assert_one_line_error
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


def _reads(sdbctl: CLI) -> dict[str, Outcome]:
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


def test_a_damaged_run_is_skipped_with_a_warning_by_a_store_wide_read_and_refused_when_named(
    sdbctl: CLI, pair: Path, store: Path
) -> None:
    _run(store, "other")
    part = store / "runs" / "other" / "events-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01  # a changed byte: the listing cannot tell, the checksum does
    part.write_bytes(bytes(data))
    runs = "SELECT DISTINCT run_id FROM events ORDER BY 1"
    out = sdbctl("query", runs, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [{"run_id": "base"}, {"run_id": "cand"}], out.stderr
    assert "run 'other' is damaged: part events-00001.parquet" in out.stderr and "warning" in out.stderr
    with pytest.raises(SdbError, match=r"run 'other' is damaged: part events-00001.parquet"):
        connect(Store.open(store), runs=["base", "other"])  # named: its error, no short read
    assert_one_line_error(sdbctl("query", runs, "--run", "other"), "run 'other'", "checksum")
    con = connect(Store.open(store), runs=["base", "cand"])
    assert run_query(con, runs)[1] == [("base",), ("cand",)]


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
    with S3Server() as server:  # with an empty bucket "runs"
        server.empty_bucket("runs")
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
