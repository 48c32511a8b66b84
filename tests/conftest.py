"""Shared fixtures: a temporary store, and the real ``sdbctl`` console script run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sdbctl.fixtures.sample_run import record_sample

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


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input's contract: exit 2, one line on stderr naming the problem (each of ``needles``), no
    traceback."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``sdbctl`` script in ``cwd`` (its own cache under ``cwd/.cache``)."""
    assert SDBCTL.exists(), f"console script not installed at {SDBCTL}; run pip install -e '.[dev,local]'"
    return subprocess.run(
        [str(SDBCTL), *args],
        cwd=cwd,
        env=_cli_env({"XDG_CACHE_HOME": str(cwd / ".cache"), **(env or {})}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def sdbctl(tmp_path: Path) -> CLI:
    """Run the installed ``sdbctl`` script in ``tmp_path``; returns the completed process."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(cwd or tmp_path, *args, env={"XDG_CACHE_HOME": str(tmp_path / ".cache"), **(env or {})})

    return run


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / ".sdb"


@pytest.fixture
def sample_run(store: Path) -> str:
    """A recorded sample run of 10 Telco customers in ``store``."""
    return record_sample(str(store), 10, run_id="sample")


SLOWEST_FIRST = ("test_llama_models.py",)  # minutes of real-model answers: started first, the rest beside


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first: on two workers (``-n 2 --dist loadfile``) they start at once and the
    other worker takes the rest, so they do not set the suite's wall time by starting last."""
    items.sort(key=lambda item: item.path.name not in SLOWEST_FIRST)
