"""Shared fixtures: a temporary store, and the real ``sdbctl`` console script run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.sample_run import record_sample

SDBCTL = Path(sys.executable).with_name("sdbctl")
REPO = Path(__file__).resolve().parent.parent


def _cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDB_STORE", "SDB_DEBUG")}
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


CLI = Callable[..., subprocess.CompletedProcess[str]]


def require(found: object, what: str, install: str) -> None:
    """A test that needs a system part: in CI (``SDB_CI=1``, set by ``.ci/run``) its absence fails the
    test; elsewhere the test skips with one line saying what to install."""
    if found:
        return
    if os.environ.get("SDB_CI") == "1":
        pytest.fail(f"{what} is missing, and CI requires it ({install})")
    pytest.skip(f"needs {what}: {install}")


@pytest.fixture
def sdbctl(tmp_path: Path) -> CLI:
    """Run the installed ``sdbctl`` script in ``tmp_path``; returns the completed process."""
    assert SDBCTL.exists(), f"console script not installed at {SDBCTL}; run pip install -e '.[dev]'"

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SDBCTL), *args],
            cwd=cwd or tmp_path,
            env=_cli_env({"XDG_CACHE_HOME": str(tmp_path / ".cache"), **(env or {})}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / ".sdb"


@pytest.fixture
def sample_run(store: Path) -> str:
    """A recorded sample run of 10 Telco customers in ``store``."""
    return record_sample(str(store), 10, run_id="sample")
