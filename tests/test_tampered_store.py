"""Issue 20's "done when": on a copy of a store with every tampering of the issue applied together, the
gate gives the verdict it gives on the clean store, or exit 2 naming what it refused; never another
PASS/FAIL. The tamperings each have their own test elsewhere; here they are all at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, assert_one_line_error
from tests.test_cache_trust import _plant

V2 = "sim:renewal@v2"


pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's directories: the test's own


def _edit(manifest: Path, **changes: Any) -> None:
    data = json.loads(manifest.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    manifest.write_text(json.dumps(data))


def _plant_run(store: Path, folder: str, **fields: Any) -> None:
    """A run folder an attacker adds: a copy of ``base``'s manifest with ``fields`` changed."""
    (store / "runs" / folder).mkdir()
    data = json.loads((store / "runs" / "base" / "run.json").read_text())
    data.update(fields)
    (store / "runs" / folder / "run.json").write_text(json.dumps(data))


def _verdict(sdbctl: CLI, cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = sdbctl("gate", *args, "--json", cwd=cwd)
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)
    assert isinstance(report, dict)
    return out.returncode, report


def test_every_tampering_at_once_leaves_the_verdict_as_it_is(sdbctl: CLI, tmp_path: Path) -> None:
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    clean.mkdir()
    assert sdbctl("record", "contract-renewal", "-n", "20", "--run-id", "base", cwd=clean).returncode == 0
    shutil.copytree(clean, dirty)
    store = dirty / ".sdb"

    # the clean verdict: the real v2 against the base
    assert sdbctl("replay", "base", "-m", V2, "--run-id", "cand", cwd=clean).returncode == 0
    code, truth = _verdict(sdbctl, clean, "cand")
    assert code == 1, truth  # v2's drift FAILs

    # (2) v1's answers planted under v2's keys in the store's cache
    _plant(store, lambda *a, **k: sdbctl(*a, cwd=dirty, **k))
    # (3) the base's manifest declares the changed action read-only and another success state
    _edit(
        store / "runs" / "base" / "run.json",
        meta__actions={"read_only": ["propose_offer"], "pure": ["propose_offer"]},
        meta__outcome={"success": ["churned", "renewed", "restructured"]},
    )
    # (4) a run that claims the future and another run's id; a run claiming to be the base
    _plant_run(store, "zzz", run_id="same", created="9999-01-01T00:00:00+00:00")
    _plant_run(store, "junk", run_id="base")
    _plant_run(store, "huge", events=10**20)
    # a truncated saved diff of an unrelated pair
    assert sdbctl("diff", "base", "probe1", cwd=dirty).returncode == 0
    for parquet in (store / "diffs").rglob("divergences.parquet"):
        parquet.write_bytes(parquet.read_bytes()[:100])

    assert sdbctl("replay", "base", "-m", V2, "--run-id", "cand", cwd=dirty).returncode == 0
    # the candidate's manifest says it was a session-mode replay with repeats
    _edit(store / "runs" / "cand" / "run.json", mode="session", repeat=3)

    code_dirty, seen = _verdict(sdbctl, dirty, "cand")
    assert code_dirty == code, seen
    for key in (
        "divergences",
        "steps_compared",
        "steps_diverged",
        "sessions_compared",
        "sessions_diverged",
        "outcomes",
    ):
        assert seen["summary"][key] == truth["summary"][key], key
    assert seen["verdict"] == truth["verdict"]
    assert seen["summary"]["cached_answers"] == 0

    # @latest never follows the planted future date: it gives the real verdict or refuses, naming the run
    latest = sdbctl("gate", "@latest", "--base", "base", cwd=dirty)
    if latest.returncode == 2:
        assert_one_line_error(latest, "zzz")
    else:
        assert latest.returncode == code, latest.stdout
    # a folder claiming to be the base is removed alone
    assert sdbctl("rm", "junk", "--yes", cwd=dirty).returncode == 0
    assert (store / "runs" / "base" / "run.json").exists() and not (store / "runs" / "junk").exists()
