"""A store is data: a manifest that names another run, claims a future date or holds a value out of
range, and a saved diff that is not a divergences file, are each *damaged*. A damaged run or diff is
one line and exit 2 for the command that reads it, a warning naming it (and the status ``damaged``) in
the listings, left out of store-wide ``query``, and ``sdbctl rm`` removes it. Parts checked against
their manifest are ``test_store_integrity.py``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error
from tests.helpers import record_run

sdbctl.fixtures.workloads.register_all()

PAST = 1_000_000_000  # 2001: a file time before any run of the test was written
FUTURE = 32_503_680_000  # the year 3000


def _pair(store: Path) -> None:
    """``base`` (sim:renewal@v1) and ``cand`` (v2, which diverges from it), 6 sessions each."""
    record_run(store, "contract-renewal", "base", sessions=6)
    record_run(store, "contract-renewal", "cand", sessions=6, model="sim:renewal@v2")


def _edit(path: Path, **changes: Any) -> None:
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _plant(store: Path, copy_of: str, folder: str, *, mtime: float | None = None, **changes: Any) -> Path:
    """A copy of run ``copy_of`` in ``runs/<folder>``, its manifest edited, its file time ``mtime``."""
    target = store / "runs" / folder
    shutil.copytree(store / "runs" / copy_of, target)
    _edit(target / "run.json", **changes)
    if mtime is not None:
        os.utime(target / "run.json", (mtime, mtime))
    return target


def _listed(sdbctl: CLI) -> tuple[dict[str, str], list[str]]:
    """``sdbctl runs --json`` as {run id: status}, and its lines on stderr."""
    out = sdbctl("runs", "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return {r["run_id"]: r["status"] for r in json.loads(out.stdout)}, out.stderr.strip().splitlines()


# -- run ids are folder names ----------------------------------------------------------------------


def test_a_manifest_claiming_another_runs_id_is_damaged_and_rm_removes_its_folder_only(
    sdbctl: CLI, store: Path
) -> None:
    _pair(store)
    junk = _plant(store, "cand", "junk", run_id="base")
    assert_one_line_error(sdbctl("show", "junk"), "runs/junk/run.json", "'base'")
    assert_one_line_error(sdbctl("gate", "junk", "--base", "base"), "runs/junk/run.json")
    runs, stderr = _listed(sdbctl)
    assert runs == {"base": "complete", "cand": "complete", "junk": "damaged"}
    assert len(stderr) == 1 and "runs/junk/run.json" in stderr[0] and "warning" in stderr[0], stderr
    unknown = sdbctl("show", "nope")  # the known runs it lists are the sound ones; the damaged is named apart
    assert_one_line_error(unknown, "'nope' not found", "base", "junk")
    assert "damaged" in unknown.stderr
    removed = sdbctl("rm", "junk", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["runs"] == ["junk"]
    assert not junk.exists() and (store / "runs" / "base" / "run.json").is_file()
    assert sdbctl("show", "base", "--json").returncode == 0


def test_latest_never_follows_a_claimed_date_into_the_future(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "early", sessions=3)
    future = "9999-12-31T23:59:59+00:00"
    _plant(store, "early", "zzz", mtime=PAST, run_id="zzz", created=future)  # its own id: sound, not believed
    _plant(store, "early", "yyy", mtime=PAST, run_id="same", created=future)  # another's id: damaged
    _plant(store, "early", "xxx", mtime=FUTURE, run_id="xxx", created=future)  # its file's time too
    record_run(store, "contract-renewal", "late", sessions=3, model="sim:renewal@v2")
    assert Store.open(store).resolve("@latest") == "late"
    shown = sdbctl("show", "@latest", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {e["run_id"] for e in json.loads(shown.stdout)} == {"late"}
    gated = sdbctl("gate", "@latest", "--base", "early", "--json")
    assert gated.returncode in (0, 1) and json.loads(gated.stdout)["summary"]["candidate_run"] == "late"
    runs, _ = _listed(sdbctl)
    assert list(runs)[-1] == "late" and runs["yyy"] == "damaged" and runs["zzz"] == "complete"
    old = sdbctl("rm", "--older-than", "1d", "--json")  # by the same times: the planted are the old ones
    assert old.returncode == 0, old.stderr
    assert json.loads(old.stdout)["dry_run"] and sorted(json.loads(old.stdout)["runs"]) == ["xxx", "yyy", "zzz"]


def test_latest_names_the_newest_run_even_when_it_is_damaged(sdbctl: CLI, store: Path) -> None:
    """A damaged newest run is refused by name, never replaced by an older run's verdict."""
    _pair(store)
    _edit(store / "runs" / "cand" / "run.json", events=-1)
    assert_one_line_error(sdbctl("gate", "@latest", "--base", "base"), "runs/cand/run.json")


# -- every malformed manifest is exit 2 naming the file --------------------------------------------

TAMPERED = {
    "events above int64": {"events": 10**20},
    "negative count": {"sessions": -3},
    "status not known": {"status": "done"},
    "count as text": {"parts": "3"},
    "count as a float": {"events": 1e20},
    "date not a date": {"created": "yesterday"},
    "date as a number": {"created": 5},
    "prompts not a list": {"prompts": "offer@v1"},
    "part rows negative": {"part_files": [{"name": "events-00000.parquet", "rows": -1, "size": 1, "xxh3": "0" * 16}]},
    "part checksum not hex": {"part_files": [{"name": "events-00000.parquet", "rows": 1, "size": 1, "xxh3": "x"}]},
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=list(TAMPERED))
def test_a_manifest_field_of_the_wrong_type_or_out_of_range_is_exit_2_naming_the_file(
    sdbctl: CLI, store: Path, change: dict[str, Any]
) -> None:
    _pair(store)
    _edit(store / "runs" / "cand" / "run.json", **change)
    for args in (("gate", "cand", "--base", "base"), ("show", "cand"), ("query", "SELECT 1", "--run", "cand")):
        assert_one_line_error(sdbctl(*args), "runs/cand/run.json")
    counted = sdbctl("query", "SELECT count(DISTINCT run_id) AS n, count(*) AS r FROM runs", "--json")
    assert counted.returncode == 0, counted.stderr  # store-wide: left out, with a warning naming it
    assert json.loads(counted.stdout) == [{"n": 1, "r": 1}] and "runs/cand/run.json" in counted.stderr
    runs, stderr = _listed(sdbctl)
    assert runs == {"base": "complete", "cand": "damaged"} and "runs/cand/run.json" in stderr[0]


@pytest.mark.parametrize("text", ["[1]", '"run"', "null", "17"])
def test_a_manifest_that_is_not_a_json_object_is_damaged(sdbctl: CLI, store: Path, text: str) -> None:
    _pair(store)
    (store / "runs" / "cand" / "run.json").write_text(text)
    assert_one_line_error(sdbctl("diff", "base", "cand"), "runs/cand/run.json")
    assert _listed(sdbctl)[0]["cand"] == "damaged"


# -- saved diffs -----------------------------------------------------------------------------------


def test_a_truncated_saved_diff_affects_only_what_reads_it(sdbctl: CLI, store: Path) -> None:
    _pair(store)
    record_run(store, "contract-renewal", "other", sessions=6, model="sim:renewal@v2")
    assert sdbctl("diff", "base", "cand").returncode == 0
    saved = store / "diffs" / "base..cand" / "divergences.parquet"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    gated = sdbctl("gate", "other", "--base", "base", "--json")  # another pair: never reads it
    assert gated.returncode in (0, 1) and "Traceback" not in gated.stderr, gated.stderr
    assert "divergences.parquet" not in gated.stderr
    for sql in ("SELECT count(*) AS n FROM runs", "SELECT count(*) AS n FROM divergences"):
        out = sdbctl("query", sql, "--json")
        assert out.returncode == 0, out.stderr
        assert "diffs/base..cand/divergences.parquet" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    sound = pq.read_metadata(store / "diffs" / "base..other" / "divergences.parquet").num_rows  # the gate's
    assert sound > 0
    assert json.loads(sdbctl("query", "SELECT count(*) AS n FROM divergences", "--json").stdout) == [{"n": sound}]
    removed = sdbctl("rm", "cand", "--json")
    assert removed.returncode == 0, removed.stderr
    assert not saved.parent.exists()


def test_a_saved_diff_of_another_schema_is_left_out_with_a_warning(sdbctl: CLI, store: Path) -> None:
    _pair(store)
    assert sdbctl("diff", "base", "cand").returncode == 0
    saved = store / "diffs" / "base..cand" / "divergences.parquet"
    shutil.copy(store / "runs" / "base" / "events-00000.parquet", saved)  # a Parquet file, not of divergences
    out = sdbctl("query", "SELECT count(*) AS n FROM divergences", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [{"n": 0}], out.stderr
    assert "diffs/base..cand/divergences.parquet" in out.stderr


# -- rm of a damaged run ---------------------------------------------------------------------------


def test_rm_removes_a_replay_with_a_missing_part_and_a_run_with_a_garbage_manifest(sdbctl: CLI, store: Path) -> None:
    record_run(store, "contract-renewal", "base", sessions=4)
    assert sdbctl("replay", "base", "--model", "sim:renewal@v2", "--run-id", "again").returncode == 0
    next((store / "runs" / "again").glob("events-*.parquet")).unlink()
    assert _listed(sdbctl)[0]["again"] == "damaged"
    assert_one_line_error(sdbctl("show", "again"), "run 'again'", "missing")
    (store / "runs" / "broken").mkdir()
    (store / "runs" / "broken" / "run.json").write_text("{")
    removed = sdbctl("rm", "again", "broken", "--json")
    assert removed.returncode == 0, removed.stderr
    assert sorted(json.loads(removed.stdout)["runs"]) == ["again", "broken"]
    assert sorted(p.name for p in (store / "runs").iterdir()) == ["base"]
