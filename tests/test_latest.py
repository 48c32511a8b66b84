"""``@latest`` is the newest run THIS MACHINE wrote to the store (issue 20 follow-up, item 8): a run
planted with a date just ahead of now is believed once that time has passed, so a store's own dates
cannot choose it while this machine wrote any of its runs. A store this machine never wrote falls back
to those dates (never one in the future), saying so; every command that resolves ``@latest`` says
which run it is, on stderr."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.store import Store
from tests.conftest import CLI

sdbctl.fixtures.workloads.register_all()

V2 = "sim:renewal@v2"


pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's directories: the test's own


def _plant(store: Path, copy_of: str, folder: str, created: dt.datetime) -> None:
    """A copy of run ``copy_of`` as ``runs/<folder>``, claiming to be created at ``created`` (its
    manifest's file time too): what a store that arrived from elsewhere may hold."""
    target = store / "runs" / folder
    shutil.copytree(store / "runs" / copy_of, target)
    manifest = json.loads((target / "run.json").read_text())
    manifest.update(run_id=folder, created=created.isoformat())
    (target / "run.json").write_text(json.dumps(manifest))
    os.utime(target / "run.json", (created.timestamp(), created.timestamp()))


def _said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "@latest" in line]


def test_a_run_planted_just_ahead_of_now_never_becomes_latest(sdbctl: CLI, store: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "10", "--run-id", "base").returncode == 0
    assert sdbctl("replay", "base", "-m", "sim:renewal@v1", "--run-id", "cand").returncode == 0
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    _plant(store, "base", "zzz", soon)  # the base again: gated against itself it PASSes
    assert sdbctl("replay", "base", "-m", V2, "--run-id", "cand2").returncode == 0
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)  # its claim is now the past
    gate = sdbctl("gate", "@latest", "--base", "base", "--json")
    assert gate.returncode == 1 and json.loads(gate.stdout)["summary"]["candidate_run"] == "cand2", gate.stdout
    assert _said(gate.stderr) == ["sdbctl: @latest is run 'cand2', the newest run this machine wrote to this store"]
    assert Store.open(store).resolve("@latest") == "cand2"
    # removed, the newest of this machine's that remain
    assert sdbctl("rm", "cand2", "--yes").returncode == 0
    assert Store.open(store).resolve("@latest") == "cand"
    # rm @latest removes this machine's newest too, never the planted run
    removed = sdbctl("rm", "@latest", "--yes", "--json")
    assert removed.returncode == 0 and json.loads(removed.stdout)["runs"] == ["cand"], removed.stdout
    assert (store / "runs" / "zzz").is_dir()


def test_a_store_this_machine_never_wrote_falls_back_to_its_dates_and_says_so(
    sdbctl: CLI, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "4", "--run-id", "early").returncode == 0
    assert sdbctl("record", "contract-renewal", "-n", "4", "--run-id", "late").returncode == 0
    _plant(store, "early", "zzz", dt.datetime.now(dt.UTC) + dt.timedelta(days=1))  # in the future: never
    monkeypatch.setenv("SDB_CACHE_DIR", str(tmp_path / "another-machine"))
    env = {"SDB_CACHE_DIR": str(tmp_path / "another-machine")}
    shown = sdbctl("show", "@latest", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert {e["run_id"] for e in json.loads(shown.stdout)} == {"late"}
    assert _said(shown.stderr) == [
        "sdbctl: @latest resolved to 'late' from the store's own dates (this machine wrote none of its runs)"
    ]
    assert Store.open(store).resolve("@latest") == "late"


def test_every_command_that_resolves_latest_says_which_run_it_is(sdbctl: CLI, store: Path) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "4", "--run-id", "base").returncode == 0
    assert sdbctl("replay", "base", "-m", V2, "--run-id", "cand").returncode == 0
    for args in (
        ("show", "@latest"),
        ("show", "@latest", "--json"),
        ("diff", "base", "@latest", "--json"),
        ("gate", "@latest", "--base", "base"),
        ("diagnose", "@latest"),
        ("export", "@latest", "--format", "jsonl", "-o", "out.jsonl"),
        ("replay", "@latest", "-m", "recorded", "--run-id", "again"),
    ):
        out = sdbctl(*args)
        assert out.returncode in (0, 1), (args, out.stderr)
        assert len(_said(out.stderr)) == 1 and "'cand'" in _said(out.stderr)[0], (args, out.stderr)
    assert not any(p.name.endswith(".log") for p in store.rglob("*"))  # this machine's record is not in the store
