"""A store never makes sdbctl write outside it or through a link, and damaged store data is one line:
a symbolic link planted as a run's lock, a run's folder, a saved diff's folder or one of their files
is refused (exit 2, naming it) with nothing written anywhere; a part whose page is damaged (its
checksum recomputed to match) and a payload that is not JSON are exit 2 naming the part or the
event, and a store-wide query leaves their run out with a warning; ``diagnose`` recomputes what it
says from the runs, never from a saved summary; a damaged run's folder name reaches the terminal
with its control characters escaped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

import sdbctl.fixtures.workloads
from sdbctl.sdb.events import DIVERGENCE_SCHEMA
from tests.chat_runs import MAP, TRIALS, ok
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import record_run

sdbctl.fixtures.workloads.register_all()

RAW = ("\x1b", "\x07", "\u202e")  # ESC, BEL (an OSC title's end) and a right-to-left override


@pytest.fixture
def pair(store: Path) -> Path:
    """``base`` (sim:renewal@v1) and ``cand`` (v2, which diverges from it), 4 sessions each."""
    record_run(store, "contract-renewal", "base", sessions=4)
    record_run(store, "contract-renewal", "cand", sessions=4, model="sim:renewal@v2")
    return store


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store, and a file there that nothing may touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim").write_text("precious\n")
    return folder


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "precious\n"


def _edit(path: Path, **changes: Any) -> None:
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


# -- 1. the writer's lock --------------------------------------------------------------------------


def test_a_lock_file_that_is_a_link_is_refused_on_resume(sdbctl: CLI, pair: Path, outside: Path) -> None:
    ok(sdbctl("replay", "base", "--model", "sim:renewal@v2", "--run-id", "r1"))
    _edit(pair / "runs" / "r1" / "run.json", status="partial", finished=None)
    lock = pair / "runs" / "r1" / ".writer.lock"
    lock.unlink(missing_ok=True)  # the file its writer left
    lock.symlink_to(outside / "victim")
    out = sdbctl("replay", "--resume", "r1", "--model", "sim:renewal@v2")
    assert_one_line_error(out, "runs/r1/.writer.lock", "link")
    _untouched(outside)


def test_a_lock_file_that_is_a_link_is_refused_for_a_new_run(sdbctl: CLI, pair: Path, outside: Path) -> None:
    planted = pair / "runs" / "candidate"
    planted.mkdir()
    (planted / ".writer.lock").symlink_to(outside / "victim")
    for args in (
        ("replay", "base", "--model", "sim:renewal@v2", "--run-id", "candidate"),
        ("record", "contract-renewal", "-n", "2", "--run-id", "candidate"),
    ):
        assert_one_line_error(sdbctl(*args), "runs/candidate/.writer.lock", "link")
        _untouched(outside)
    assert sorted(p.name for p in planted.iterdir()) == [".writer.lock"]


@pytest.mark.parametrize("planted", ["runs/candidate", "runs"])
def test_a_run_folder_that_is_a_link_is_never_written_through(
    sdbctl: CLI, pair: Path, outside: Path, planted: str
) -> None:
    link = pair / planted
    if link.exists():
        shutil.move(str(link), str(pair / "moved"))  # the runs themselves stay readable elsewhere
    link.symlink_to(outside, target_is_directory=True)
    out = sdbctl("record", "contract-renewal", "-n", "2", "--run-id", "candidate")
    assert_one_line_error(out, planted, "link")
    _untouched(outside)


# -- 4. a saved diff's folder and files ------------------------------------------------------------


@pytest.mark.parametrize("command", ["gate", "diff"])
def test_a_saved_diff_folder_that_is_a_link_is_never_written_through(
    sdbctl: CLI, pair: Path, outside: Path, command: str
) -> None:
    (pair / "diffs").mkdir()
    (pair / "diffs" / "base..cand").symlink_to(outside, target_is_directory=True)
    args = ("gate", "cand", "--base", "base") if command == "gate" else ("diff", "base", "cand")
    assert_one_line_error(sdbctl(*args), "diffs/base..cand", "link")
    _untouched(outside)


def test_the_diffs_folder_or_a_summary_that_is_a_link_is_refused(sdbctl: CLI, pair: Path, outside: Path) -> None:
    (pair / "diffs").symlink_to(outside, target_is_directory=True)
    assert_one_line_error(sdbctl("diff", "base", "cand"), "diffs", "link")
    _untouched(outside)
    (pair / "diffs").unlink()
    (pair / "diffs" / "base..cand").mkdir(parents=True)
    (pair / "diffs" / "base..cand" / "summary.json").symlink_to(outside / "victim")
    assert_one_line_error(sdbctl("gate", "cand", "--base", "base"), "diffs/base..cand/summary.json", "link")
    _untouched(outside)
    assert not (pair / "diffs" / "base..cand" / "divergences.parquet").exists()  # nothing written at all


def test_a_manifest_that_is_a_link_is_never_rewritten(sdbctl: CLI, pair: Path, outside: Path) -> None:
    ok(sdbctl("replay", "base", "--model", "sim:renewal@v2", "--run-id", "r1"))
    manifest = pair / "runs" / "r1" / "run.json"
    _edit(manifest, status="partial", finished=None)
    shutil.copy(manifest, outside / "run.json")
    manifest.unlink()
    manifest.symlink_to(outside / "run.json")
    before = (outside / "run.json").read_bytes()
    out = sdbctl("replay", "--resume", "r1", "--model", "sim:renewal@v2")
    assert_one_line_error(out, "runs/r1/run.json", "link")
    assert (outside / "run.json").read_bytes() == before and manifest.is_symlink()


def test_rm_never_moves_a_run_through_a_trash_folder_that_is_a_link(sdbctl: CLI, pair: Path, outside: Path) -> None:
    (pair / ".trash").symlink_to(outside, target_is_directory=True)
    assert_one_line_error(sdbctl("rm", "cand"), ".trash", "link")
    _untouched(outside)
    assert (pair / "runs" / "cand" / "run.json").is_file()


# -- 9. damaged parts and payloads -----------------------------------------------------------------


def _rechecksummed(run: Path, change: Any) -> None:
    """Part 0 of ``run`` rewritten by ``change(bytes) -> bytes``, its manifest entry made to match."""
    part = run / "events-00000.parquet"
    data = change(part.read_bytes())
    part.write_bytes(data)
    manifest = json.loads((run / "run.json").read_text())
    if manifest["part_files"] is not None:
        manifest["part_files"][0].update(xxh3=xxhash.xxh3_64_hexdigest(data), size=len(data))
    (run / "run.json").write_text(json.dumps(manifest))


def _damaged_page(data: bytes) -> bytes:
    """The bytes of the first data page of the ``payload`` column scrambled, the footer left whole."""
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    chunk = next(
        meta.row_group(0).column(i)
        for i in range(meta.num_columns)
        if meta.row_group(0).column(i).path_in_schema == "payload"
    )
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    scrambled = bytearray(data)
    for k in range(start, start + chunk.total_compressed_size):
        scrambled[k] ^= 0x5A
    return bytes(scrambled)


@pytest.mark.parametrize("listed", [True, False], ids=["checksum-recomputed", "part-files-null"])
def test_a_part_with_a_damaged_page_is_exit_2_naming_it(sdbctl: CLI, pair: Path, listed: bool) -> None:
    base = pair / "runs" / "base"
    if not listed:
        _edit(base / "run.json", part_files=None)
    _rechecksummed(base, _damaged_page)
    for args in (("gate", "cand", "--base", "base"), ("diff", "base", "cand"), ("show", "base")):
        assert_one_line_error(sdbctl(*args), "run 'base'", "events-00000.parquet")
    read = "SELECT run_id, max(length(payload)) AS n FROM events GROUP BY 1 ORDER BY 1"  # reads every payload
    named = sdbctl("query", read, "--run", "base")
    assert_one_line_error(named, "run 'base'", "events-00000.parquet")
    whole = sdbctl("query", read, "--json")
    assert whole.returncode == 0, whole.stderr
    assert [r["run_id"] for r in json.loads(whole.stdout)] == ["cand"]
    lines = whole.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "run 'base'" in lines[0] and "events-00000" in lines[0]


def _payloads_replaced(kind: str, text: str) -> Any:
    def change(data: bytes) -> bytes:
        table = pq.read_table(pa.BufferReader(data))
        kinds = table.column("kind").to_pylist()
        payloads = [text if k == kind else p for k, p in zip(kinds, table.column("payload").to_pylist(), strict=True)]
        index = table.schema.get_field_index("payload")
        table = table.set_column(index, table.schema.field(index), pa.array(payloads, pa.string()))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return bytes(sink.getvalue())

    return change


@pytest.mark.parametrize("text", ["{not json", "[1]"])
def test_a_payload_that_is_not_json_is_exit_2_naming_the_event(sdbctl: CLI, pair: Path, text: str) -> None:
    _rechecksummed(pair / "runs" / "base", _payloads_replaced("action", text))
    shown = ("show", "base", "--json")
    for args in (("gate", "cand", "--base", "base"), ("diff", "base", "cand"), *([shown] if text[0] == "{" else [])):
        assert_one_line_error(sdbctl(*args), "run 'base'", "event", "of session", "payload")


# -- 9c. diagnose recomputes -----------------------------------------------------------------------


def _diagnosed(sdbctl: CLI) -> dict[str, Any]:
    return dict(json.loads(ok(sdbctl("diagnose", "b", "--json")).stdout))


def test_diagnose_never_trusts_a_saved_summary_or_divergences(sdbctl: CLI, store: Path) -> None:
    ok(sdbctl("import", "chat", TRIALS[0], "--map", MAP, "--run-id", "a"))
    ok(sdbctl("import", "chat", TRIALS[1], "--map", MAP, "--run-id", "b"))
    ok(sdbctl("diff", "a", "b"))
    truth = _diagnosed(sdbctl)
    lead = next(f for f in truth["findings"] if f["where"] == "outcomes")  # real flips: what a forgery would change
    assert "went from pass to fail" in lead["evidence"]
    folder = store / "diffs" / "a..b"
    summary = json.loads((folder / "summary.json").read_text())
    forged = dict(summary["outcomes"], sessions=20, negative_flips=19)
    forged["flipped"] = dict(forged["flipped"], negative=[f"s{i}" for i in range(19)])
    (folder / "summary.json").write_text(json.dumps({**summary, "outcomes": forged}))
    rows = pq.read_table(folder / "divergences.parquet").to_pylist()
    planted = dict(rows[0], candidate_action="launch_missiles", base_action="launch_missiles", reason="extra")
    pq.write_table(
        pa.Table.from_pylist([*rows, *[planted] * 50], schema=DIVERGENCE_SCHEMA), folder / "divergences.parquet"
    )
    said = _diagnosed(sdbctl)
    assert said == truth
    assert "19 of 20" not in json.dumps(said) and "launch_missiles" not in json.dumps(said)
    for broken in (
        {**summary, "outcomes": {k: v for k, v in summary["outcomes"].items() if k != "pass_k"}},
        {**summary, "outcomes": {k: v for k, v in summary["outcomes"].items() if k != "flipped"}},
        {**summary, "outcomes": {**summary["outcomes"], "extra": 1}},
        [1],
    ):
        (folder / "summary.json").write_text(json.dumps(broken))
        out = sdbctl("diagnose", "b", "--json")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert json.loads(out.stdout) == truth
    (folder / "summary.json").write_text("{not json")
    assert json.loads(ok(sdbctl("diagnose", "b", "--json")).stdout) == truth


# -- 10. store-derived names reach the terminal escaped -------------------------------------------


def test_a_damaged_runs_folder_name_is_shown_escaped(sdbctl: CLI, pair: Path) -> None:
    name = "x\x1b]0;owned\x07\u202egpj"
    shutil.copytree(pair / "runs" / "cand", pair / "runs" / name)
    for args in (
        ("runs",),
        ("runs", "--json"),
        ("query", "SELECT count(*) AS n FROM events"),
        ("show", "nope"),
        ("gate", "@latest", "--base", "base"),
    ):
        out = sdbctl(*args)
        assert "Traceback" not in out.stderr, (args, out.stderr)
        assert not any(c in out.stderr for c in RAW), (args, out.stderr)
        assert "\\x1b" in out.stderr or "\\u202e" in out.stderr, (args, out.stderr)
    assert "damaged, left out" in sdbctl("show", "nope").stderr


def test_a_damaged_saved_diffs_folder_name_is_shown_escaped(sdbctl: CLI, pair: Path) -> None:
    folder = pair / "diffs" / "a\x1b]0;t\x07\u202e..b"
    folder.mkdir(parents=True)
    (folder / "divergences.parquet").write_bytes(b"not parquet")
    out = sdbctl("query", "SELECT count(*) AS n FROM divergences")
    assert out.returncode == 0 and "warning" in out.stderr, out.stderr
    assert not any(c in out.stderr for c in RAW), out.stderr
    assert "\\x1b" in out.stderr and "\\u202e" in out.stderr
