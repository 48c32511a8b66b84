"""Events that contradict themselves: a run's parts rewritten (their checksums recomputed in
``run.json``, so they pass the integrity checks) so that one event would change how the whole run is
read. Such a run is damaged: exit 2, one line naming it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from tests.conftest import CLI, assert_one_line_error, run_cli

Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base`` (6 sessions), its step-mode replay ``cand`` (v2), its session-mode replays ``sess`` (v2)
    and ``noise`` (v1, the base's own model)."""
    root = tmp_path_factory.mktemp("built")
    for args in (
        ("record", "contract-renewal", "-n", "6", "--run-id", "base"),
        ("replay", "base", "-m", "sim:renewal@v2", "--run-id", "cand"),
        ("replay", "base", "--mode", "session", "-m", "sim:renewal@v2", "--run-id", "sess"),
        ("replay", "base", "--mode", "session", "-m", "sim:renewal@v1", "--run-id", "noise"),
    ):
        out = run_cli(root, *args, env={"XDG_CACHE_HOME": str(root / ".cache")})
        assert out.returncode == 0, out.stderr
    return root / ".sdb"


@pytest.fixture
def runs(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built store's runs folder, in the ``sdbctl`` fixture's folder."""
    shutil.copytree(built, tmp_path / ".sdb")
    return tmp_path / ".sdb" / "runs"


def _rewrite(run: Path, change: Callable[[Rows], Rows]) -> None:
    """Part 0 of ``run`` rewritten to ``change(rows)``, its manifest entry (checksum, size, rows) made
    to match, as a writer computes them."""
    part = run / "events-00000.parquet"
    table = pq.read_table(part)
    rows = change(table.to_pylist())
    sink = pa.BufferOutputStream()
    pq.write_table(
        pa.Table.from_pylist(rows, schema=table.schema).replace_schema_metadata(table.schema.metadata),
        sink,
        compression="zstd",
    )
    data = bytes(sink.getvalue())
    part.write_bytes(data)
    manifest = json.loads((run / "run.json").read_text())
    manifest["part_files"][0].update(xxh3=xxhash.xxh3_64_hexdigest(data), size=len(data), rows=len(rows))
    (run / "run.json").write_text(json.dumps(manifest))


def _replay_mark(row: dict[str, Any], **mark: Any) -> dict[str, Any]:
    """``row`` marked so in its payload and in its column ``replay`` (which the diff reads)."""
    payload = json.loads(row["payload"])
    payload["replay"] = {**payload.get("replay", {}), **mark}
    column = json.dumps(payload["replay"], sort_keys=True, separators=(",", ":"))
    return {**row, "payload": json.dumps(payload), "replay": column}


def test_one_event_claiming_step_mode_in_a_session_mode_replay_is_damaged(sdbctl: CLI, runs: Path) -> None:
    def one_forced(rows: Rows) -> Rows:
        first = next(i for i, r in enumerate(rows) if r["kind"] == "llm")
        assert sum(r["kind"] == "llm" for r in rows) > 1
        rows[first] = _replay_mark(rows[first], source_seq=5)
        return rows

    _rewrite(runs / "sess", one_forced)
    for args in (("diff", "base", "sess"), ("gate", "sess", "--base", "base")):
        assert_one_line_error(sdbctl(*args), "run 'sess'", "damaged")


def test_repeats_that_name_other_models_are_damaged(sdbctl: CLI, runs: Path) -> None:
    """The base's own (v1) sessions planted as repeat 1 of the v2 candidate would halve its drift."""
    base_rows = pq.read_table(runs / "base" / "events-00000.parquet").to_pylist()
    planted = [{**r, "run_id": "sess", "session_id": r["session_id"] + "#r1"} for r in base_rows]
    _rewrite(runs / "sess", lambda rows: rows + planted)
    for args in (("diff", "base", "sess"), ("gate", "sess", "--base", "base", "--noise-aware")):
        assert_one_line_error(sdbctl(*args), "run 'sess'", "damaged", "repeat 1")


@pytest.mark.parametrize("repeat", [10**15, -3, 1000])
def test_a_repeat_index_out_of_range_is_damaged(sdbctl: CLI, runs: Path, repeat: int) -> None:
    def far(rows: Rows) -> Rows:
        first = next(i for i, r in enumerate(rows) if r["kind"] == "llm")
        rows[first] = _replay_mark(rows[first], repeat=repeat)
        return rows

    _rewrite(runs / "cand", far)
    assert_one_line_error(sdbctl("gate", "cand", "--base", "base"), "run 'cand'", "damaged", "repeat")


def test_a_session_repeat_out_of_range_is_damaged(sdbctl: CLI, runs: Path) -> None:
    _rewrite(runs / "sess", lambda rows: [{**r, "session_id": r["session_id"] + "#r5000"} for r in rows])
    assert_one_line_error(sdbctl("diff", "base", "sess"), "run 'sess'", "damaged", "repeat")


def _renamed(rows: Rows) -> Rows:
    return [{**r, "session_id": "x-" + r["session_id"]} for r in rows]


def test_a_candidate_sharing_no_session_with_the_base_is_nothing_to_compare(sdbctl: CLI, runs: Path) -> None:
    _rewrite(runs / "sess", _renamed)
    out = sdbctl("gate", "sess", "--base", "base", "--allow-partial")
    assert_one_line_error(out, "nothing to compare", "'sess'", "'base'")


def test_a_noise_run_sharing_no_session_with_the_base_says_so(sdbctl: CLI, runs: Path) -> None:
    _rewrite(runs / "noise", _renamed)
    out = sdbctl("gate", "sess", "--base", "base", "--noise", "noise", "--noise-aware", "--allow-partial")
    assert_one_line_error(out, "nothing to compare", "'noise'", "'base'")
    assert "needs a noise floor" not in out.stderr
