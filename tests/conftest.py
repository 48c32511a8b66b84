"""Shared fixtures and helpers: a temporary store, and the ``sdbctl`` command line run two ways.

In this process (the default: the ``sdbctl`` fixture, :func:`run_cli`): the very function the console
script runs (:func:`sdbctl.cli.main.execute`, where errors become exit 2) with the streams captured by
click's ``CliRunner``, in the test's directory and environment, and whatever the call changed of this
process put back afterwards. As a real process (the ``sdbctl_process`` fixture, :func:`run_process`, or
:data:`SDBCTL` for ``Popen``): where a process is what is tested (signals, a closed pipe, the console
script's own exit status, ``record -- CMD``'s child, a process's memory) or is needed (the real models,
which llama.cpp keeps for the life of a process; a Ray driver with an environment of its own).
"""

from __future__ import annotations

import compileall
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import click.formatting
import pytest
from click.testing import CliRunner

from sdbctl.cli import _render as render
from sdbctl.cli.main import execute
from sdbctl.fixtures.sample_run import record_sample

SDBCTL = Path(sys.executable).with_name("sdbctl")
REPO = Path(__file__).resolve().parent.parent


class Outcome(Protocol):
    """What a test reads of a finished command line, in process (:class:`Ran`) or not
    (:class:`subprocess.CompletedProcess`)."""

    @property
    def returncode(self) -> int: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


@dataclass(frozen=True)
class Ran:
    """A command line run in this process: its arguments, exit status and captured output."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


CLI = Callable[..., Outcome]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a command line runs in: this one without ``SDB_STORE`` and ``SDB_DEBUG``, 200
    columns, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("SDB_STORE", "SDB_DEBUG")}
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


def require(found: object, what: str, install: str) -> None:
    """A test that needs a system part: in CI (``SDB_CI=1``, set by ``.ci/run``) its absence fails the
    test; elsewhere the test skips with one line saying what to install."""
    if found:
        return
    if os.environ.get("SDB_CI") == "1":
        pytest.fail(f"{what} is missing, and CI requires it ({install})")
    pytest.skip(f"needs {what}: {install}")


def assert_one_line_error(out: Outcome, *needles: str) -> None:
    """Bad input's contract: exit 2, one line on stderr naming the problem (each of ``needles``), no
    traceback."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.rstrip("\n").splitlines()  # an empty line before it is a second line
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def wait_until(predicate: Callable[[], object], timeout: float = 30, what: str | Callable[[], str] = "") -> None:
    """Return as soon as ``predicate()`` is true (asked every 10 ms); fail the test if it is not within
    ``timeout`` seconds, saying ``what`` was awaited (a callable: said as it is at the deadline)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            pytest.fail(f"not within {timeout} s: {said or 'the condition'}")
        time.sleep(0.01)


# ---- the command line in this process ----------------------------------------------------------------

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGPIPE", "SIGHUP") if hasattr(signal, name))


# what the program keeps for its process's life (a warning given once, checksums read), which each
# command line in this process starts without, as a process of its own would
_PER_PROCESS = {"sdbctl.sdb.store._layout": "_skipped", "sdbctl.sdb.store._integrity": "_checked"}


def _set_environ(target: Mapping[str, str]) -> None:
    for key in [k for k in os.environ if k not in target]:
        del os.environ[key]
    for key, value in target.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _foreign(module: object, directory: Path) -> bool:
    """A module a command imported from ``directory``, the test's own: user code (an agent named
    MODULE:ATTR), which the next test's own file of that name must replace. Libraries are never taken
    out, wherever they are installed."""
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and directory in Path(path).resolve().parents


def _ours(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None)  # what Thread(target=...) runs (a test's server's are not ours)
    return thread.name.startswith("sdb-") or getattr(target, "__module__", "").startswith("sdbctl.")


def _warning_to_stderr(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
    line: str | None = None,
) -> None:  # fmt: skip
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextmanager
def _this_process_kept(args: tuple[str, ...]) -> Iterator[None]:
    """Whatever a command line changes of the process, put back after it: the environment (the
    ``--s3-endpoint`` option sets one), the working directory, signal handlers (a recording's), the
    exception hook (typer's), logging, ``sys.path`` and the modules it imported from the test's
    directory. Threads it started and left running fail the test: in a process of its own they would die
    with it; here they would outlive the command."""
    environ, cwd, path, modules = dict(os.environ), os.getcwd(), list(sys.path), set(sys.modules)
    handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    hook, root = sys.excepthook, logging.getLogger()
    log = (list(root.handlers), root.level)
    threads = set(threading.enumerate())
    try:
        yield
    finally:
        here = Path(os.getcwd()).resolve()  # the command's directory
        _set_environ(environ)
        os.chdir(cwd)
        for signum, handler in handlers.items():
            if signal.getsignal(signum) != handler:
                signal.signal(signum, handler)
        sys.excepthook = hook
        root.handlers[:], root.level = log
        sys.path[:] = path
        for name in [m for m in sys.modules if m not in modules and _foreign(sys.modules[m], here)]:
            del sys.modules[name]

    def started() -> list[threading.Thread]:  # by the command: named sdb-..., or running sdbctl's code
        return [t for t in threading.enumerate() if t not in threads and t.is_alive() and _ours(t)]

    # a writer's or a server's thread may still be on its way out
    wait_until(lambda: not started(), 10, lambda: f"the end of the threads sdbctl {' '.join(args)} left: {started()}")


def run_cli(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Ran:
    """``sdbctl ARGS`` in this process, in ``cwd`` (its own cache under ``cwd/.cache`` unless ``env``
    names one): what the console script would print and exit with, without starting a process."""
    environ = cli_env({"XDG_CACHE_HOME": str(cwd / ".cache"), **(env or {})})
    with _this_process_kept(args):
        _set_environ(environ)
        os.chdir(cwd)
        for module, name in _PER_PROCESS.items():
            if module in sys.modules:
                getattr(sys.modules[module], name).clear()
        root = logging.getLogger()  # as in a process of its own: no handlers (pytest's), so a warning
        root.handlers[:], root.level = [], logging.WARNING  # goes to stderr (logging.lastResort)
        with CliRunner().isolation() as (out, err, _), warnings.catch_warnings():
            warnings.resetwarnings()  # the interpreter's filters, not pytest's: what a user would see on stderr
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _warning_to_stderr
            click.formatting.FORCED_WIDTH = None  # help as wide as COLUMNS says, as in a process (isolation: 80)
            render.console, render.err_console = render.consoles()  # as this call's environment makes them
            try:
                status = execute(list(args))
            except Exception as exc:  # as the interpreter ends on one: the hook prints it, status 1
                sys.excepthook(type(exc), exc, exc.__traceback__)
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
            stdout = out.getvalue().decode()
            stderr = err.getvalue().decode(errors="backslashreplace")
    return Ran(args, status, stdout, stderr)


# ---- the command line as a process -------------------------------------------------------------------


def run_process(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``sdbctl`` script in ``cwd`` (its own cache under ``cwd/.cache`` unless ``env``
    names one), as a user's shell would."""
    assert SDBCTL.exists(), f"console script not installed at {SDBCTL}; run pip install -e '.[dev,local]'"
    return subprocess.run(
        [str(SDBCTL), *args],
        cwd=cwd,
        env=cli_env({"XDG_CACHE_HOME": str(cwd / ".cache"), **(env or {})}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def sdbctl(tmp_path: Path) -> CLI:
    """``sdbctl ARGS`` in this process, in ``tmp_path`` (or ``cwd=``), its cache under ``tmp_path``."""

    def run(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Ran:
        return run_cli(cwd or tmp_path, *args, env={"XDG_CACHE_HOME": str(tmp_path / ".cache"), **(env or {})})

    return run


@pytest.fixture
def sdbctl_process(tmp_path: Path) -> CLI:
    """The installed ``sdbctl`` script as a process, in ``tmp_path`` (or ``cwd=``), its cache under
    ``tmp_path``: for a test whose subject needs a process of its own."""

    def run(
        *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cache = {"XDG_CACHE_HOME": str(tmp_path / ".cache")}
        return run_process(cwd or tmp_path, *args, env={**cache, **(env or {})}, timeout=timeout)

    return run


@pytest.fixture
def machine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This machine's directory for stores (``SDB_CACHE_DIR``: the response cache, the runs it wrote),
    apart from the test's folder and its stores, the same for the commands and the test's own calls."""
    root = tmp_path / "machine-cache"
    monkeypatch.setenv("SDB_CACHE_DIR", str(root))
    return root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / ".sdb"


@pytest.fixture
def sample_run(store: Path) -> str:
    """A recorded sample run of 10 Telco customers in ``store``."""
    return record_sample(str(store), 10, run_id="sample")


# minutes of real-model answers, then the files of a minute or more (framework processes, a Ray cluster,
# an S3 server): started first, on both workers, so that none of them starts last and sets the wall time
SLOWEST_FIRST = ("test_llama_models.py", "test_recorder_openai_agents.py", "test_ray_replay.py", "test_s3_store.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first: on two workers (``-n 2 --dist loadfile``) they start at once and the
    other worker takes the rest, so they do not set the suite's wall time by starting last."""
    first = {name: k for k, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))


def pytest_configure(config: pytest.Config) -> None:
    """The project's bytecode written once, before any test (the controller, not each xdist worker):
    where PYTHONDONTWRITEBYTECODE is set, as on our CI machines, every ``sdbctl`` process the tests start
    would otherwise compile the whole package again (0.15 s each, some hundreds of processes)."""
    if hasattr(config, "workerinput"):
        return
    for folder in ("cli", "sdb", "patterns", "recorders", "fixtures", "sdbctl"):
        compileall.compile_dir(REPO / folder, quiet=1, workers=2)
