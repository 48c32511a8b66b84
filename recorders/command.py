"""``sdbctl record -- CMD ARGS...``: run an unmodified agent with its OpenAI base URL pointed at the
recording proxy, and record every chat-completions call it makes into one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sdbctl.recorders.proxy import DEFAULT_UPSTREAM, ConversationRecorder, RecordingProxy, check_upstream
from sdbctl.sdb.boundary import load_actions_setting
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import Redactor, load_redactor, url_without_secrets

BASE_URL_VARIABLES = ("OPENAI_BASE_URL", "OPENAI_API_BASE")


@dataclass
class CommandSummary:
    run_id: str
    exit_code: int
    sessions: int
    llm_calls: int
    actions: int
    effects: int
    errors: int
    seconds: float
    status: str


def default_upstream(environ: Mapping[str, str]) -> str:
    """``OPENAI_BASE_URL`` (or ``OPENAI_API_BASE``) as the environment had it, else OpenAI's API."""
    for name in BASE_URL_VARIABLES:
        if environ.get(name):
            return environ[name]
    return DEFAULT_UPSTREAM


@contextlib.contextmanager
def _recording_proxy(
    store: str | None, *, upstream: str | None, run_id: str | None, port: int, redactor: Redactor | None, mode: str
) -> Iterator[tuple[RecordingProxy, Recorder, _Outcome]]:
    """A new run with the proxy recording into it, for the ``with`` block; then the proxy stops and
    the run closes with the block's outcome (``partial`` if the block raised)."""
    target = check_upstream(upstream or default_upstream(os.environ))
    rules = redactor if redactor is not None else load_redactor()
    acting = load_actions_setting()  # a malformed config is refused before the run is created
    recorder = Recorder(
        store,
        {"mode": "record", "upstream": url_without_secrets(target), "redaction": rules.names, "via": mode},
        run_id=run_id,
        handle_signals=False,
        recorder="proxy",
    )
    try:
        conversations = ConversationRecorder(recorder, rules, text_actions=acting.text_actions)
        proxy = RecordingProxy(target, conversations, port=port).start()
    except BaseException:
        recorder.close("partial", interrupted="proxy did not start")
        raise
    outcome = _Outcome()
    try:
        yield proxy, recorder, outcome
    finally:
        try:
            proxy.stop()
        finally:
            recorder.close(outcome.status)


@dataclass
class _Outcome:
    status: str = "partial"  # set to complete by a block that finished
    started: float = field(default_factory=time.monotonic)

    def summary(self, recorder: Recorder, proxy: RecordingProxy, exit_code: int) -> CommandSummary:
        calls = proxy.conversations
        return CommandSummary(
            run_id=recorder.run_id,
            exit_code=exit_code,
            sessions=len(calls.conversations),
            llm_calls=calls.llm_events,
            actions=calls.actions,
            effects=calls.effects,
            errors=calls.errors,
            seconds=round(time.monotonic() - self.started, 3),
            status=self.status,
        )


def record_command(
    argv: Sequence[str],
    *,
    store: str | None = None,
    upstream: str | None = None,
    run_id: str | None = None,
    port: int = 0,
    redactor: Redactor | None = None,
    on_start: Callable[[RecordingProxy, str], None] | None = None,
) -> CommandSummary:
    """Run ``argv`` behind the proxy until it exits; the summary carries its exit code."""
    if not argv:
        raise SdbError("record: no command after -- (e.g. sdbctl record -- python my_agent.py)")
    if shutil.which(argv[0]) is None:
        what = "not executable" if os.path.exists(argv[0]) else "not found"
        raise SdbError(f"record: command {what}: {argv[0]}")
    with _recording_proxy(store, upstream=upstream, run_id=run_id, port=port, redactor=redactor, mode="command") as (
        proxy,
        recorder,
        outcome,
    ):
        if on_start is not None:
            on_start(proxy, recorder.run_id)
        env = dict(os.environ)
        for name in BASE_URL_VARIABLES:
            env[name] = proxy.url
        env["SDB_RUN_ID"] = recorder.run_id
        code = _run(argv, env)
        outcome.status = "complete"
    return outcome.summary(recorder, proxy, code)


def _from_terminal() -> bool:
    """Whether we are the terminal's foreground process group (so a SIGINT came from its Ctrl-C)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _run(argv: Sequence[str], env: dict[str, str]) -> int:
    """Run the command to its end; SIGINT and SIGTERM go to it (not to us), its exit code comes back."""
    try:
        child = subprocess.Popen(list(argv), env=env)
    except OSError as exc:  # checked before the run was opened; gone or changed since
        raise SdbError(f"record: cannot run {argv[0]} ({exc.strerror})") from None

    def forward(signum: int, frame: types.FrameType | None) -> None:
        # SIGTERM sent to us is passed on. A Ctrl-C typed at the terminal reaches the whole foreground
        # process group, the child included, so it is not sent twice; a SIGINT from anything else (a
        # supervisor, CI) is passed on. Either way we wait for the child, then close the run.
        if child.poll() is None and (signum == signal.SIGTERM or not _from_terminal()):
            child.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code if code >= 0 else 128 - code


def serve_proxy(
    *,
    store: str | None = None,
    upstream: str | None = None,
    run_id: str | None = None,
    port: int = 0,
    on_start: Callable[[RecordingProxy, str], None] | None = None,
) -> CommandSummary:
    """Serve the recording proxy until SIGINT or SIGTERM, then close the run (for agents that are not
    started by sdbctl: another language, a container, a long-lived service)."""
    stop = threading.Event()

    def finish(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    with _recording_proxy(store, upstream=upstream, run_id=run_id, port=port, redactor=None, mode="serve") as (
        proxy,
        recorder,
        outcome,
    ):
        outcome.status = "complete"  # stopping, by a signal or otherwise, is how this run ends
        previous = {s: signal.signal(s, finish) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if on_start is not None:
                on_start(proxy, recorder.run_id)
            while not stop.wait(0.5):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    return outcome.summary(recorder, proxy, 0)
