"""The in-process recorder: cheap for the caller, durable in the background.

A call such as ``session.action(...)`` costs the caller the canonical JSON of its payload, the
session's next ``seq`` and one append to a lock-free queue (:mod:`._session`). A background writer
drains the queue into Arrow record batches and publishes them as Parquet parts when the queue reaches
``flush_events`` rows or every ``flush_interval`` seconds, whichever comes first. Leaving the
context, normal interpreter exit, SIGINT and SIGTERM flush what is buffered.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import signal
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import EventQueue, RequestChains, canonical_bytes
from sdbctl.sdb.recording._fields import int_clock, utf8
from sdbctl.sdb.recording._manifest import manifest_fields, new_counter, new_run_id, resumed_counters
from sdbctl.sdb.recording._session import Session
from sdbctl.sdb.recording._signals import SignalChain
from sdbctl.sdb.redaction import RedactingSession, sdk_redactor
from sdbctl.sdb.store import RunWriter, Store, check_run_id


class Recorder:
    """Records agent episodes into a run of a store.

    ``meta`` keys ``model``, ``prompts``, ``mode``, ``agent``, ``source_run`` and ``git_commit`` go
    into the run manifest as such; every other key is kept under the manifest's ``meta``.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        flush_events: int = 65_536,
        flush_interval: float = 1.0,
        handle_signals: bool = True,
        actor: str = "agent",
        pattern: str = "",
        resume: bool = False,
        recorder: str = "sdk",
        clock: Callable[[], int] = time.time_ns,
        shard: str | None = None,
        redact: bool | None = None,
    ) -> None:
        if flush_events < 1 or flush_interval <= 0:
            raise SdbError("flush_events must be >= 1 and flush_interval > 0")
        # opt-in redaction of every recorded value (None: as [tool.sdbctl.redact] sdk says)
        self._redactor = sdk_redactor(redact)
        if self._redactor is not None:
            meta = {**(meta or {}), "redaction": self._redactor.names}
        meta, fields = manifest_fields(meta)
        self.store = Store.open(store, must_exist=False)
        self.run_id = check_run_id(run_id) if run_id else new_run_id()
        self.actor = actor
        self.pattern = pattern
        # ns since the epoch of each event; importers give the source's own times, as any integer type
        # (numpy's too), taken as an int so that both recorder paths accept the same clocks
        self.clock = clock if clock is time.time_ns else int_clock(clock)
        self.flush_events = flush_events
        self.flush_interval = flush_interval
        if shard is not None:  # one worker of a distributed run: parts only, the driver owns the manifest
            if not run_id:
                raise SdbError("a shard writes into an existing run: give its run id")
            self._writer = RunWriter.for_shard(self.store, self.run_id, shard)
        elif resume:
            if not run_id:
                raise SdbError("resume needs the run id of the run to continue")
            self._writer = RunWriter.reopen(self.store, self.run_id)
        else:
            self._writer = RunWriter.create(self.store, self.run_id, recorder=recorder, meta=meta, **fields)
        self._counters: dict[str, itertools.count[int]] = (
            resumed_counters(self.store, self.run_id) if resume or shard is not None else {}
        )
        self._wake = threading.Event()
        self._queue = EventQueue(flush_events, self._wake.set, self._gated)
        self._units = 0  # unit() blocks open, in any thread
        self._counters_lock = threading.Lock()
        self._chains = RequestChains()  # each session's last requests: an llm event stores what is new
        self._side: dict[str, Any] = {}
        self._flush_lock = threading.Lock()
        self._close_once = threading.Lock()  # acquired once, by the first close(), never released
        self._local = threading.local()
        self._deferred_signal: int | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._interrupted: str | None = None
        self._signals = SignalChain()
        self._thread = threading.Thread(target=self._background, name=f"sdb-writer-{self.run_id}", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)
        if handle_signals:
            self._signals.install(self._on_signal)

    # -- recording -----------------------------------------------------------------------------

    def session(self, session_id: str, *, actor: str | None = None, pattern: str | None = None) -> Session:
        """The session ``session_id`` of this run; asking again continues its ``seq``."""
        if self._closed:
            raise SdbError(f"run {self.run_id}: recorder is closed")
        sid = session_id if type(session_id) is str else str(session_id)
        actor = actor or self.actor
        if pattern is None:
            pattern = self.pattern
        # the common case in one test: plain ASCII strings; anything else is checked and converted
        if not (
            type(actor) is str and type(pattern) is str and sid.isascii() and actor.isascii() and pattern.isascii()
        ):
            if not isinstance(actor, str) or not isinstance(pattern, str):
                raise PayloadError("actor and pattern must be strings")
            sid, actor, pattern = str(sid), str(actor), str(pattern)  # a str subclass: plain str
            if not utf8(sid, actor, pattern):
                raise PayloadError("session id, actor and pattern must be UTF-8 text (no lone surrogate)")
        session = Session(
            sid,
            actor,
            pattern,
            append=self._queue.append,
            next_seq=self._counter(sid),
            clock=self.clock,
            chain=self._chains.get(sid),
        )
        if self._redactor is not None:
            return RedactingSession(session, self._redactor)  # type: ignore[return-value]
        return session

    def forget_session(self, session_id: str) -> None:
        """A session that is over: the requests kept to store its next one as a delta are let go
        (a bulk import's memory stays that of the sessions still open). Its seq goes on if it is
        asked again."""
        self._chains.drop(session_id)

    def _counter(self, session_id: str) -> Callable[[], int]:
        counter = self._counters.get(session_id)  # one atomic lookup: a session asked again
        if counter is None:
            with self._counters_lock:
                counter = self._counters.setdefault(session_id, new_counter())
        return counter.__next__

    def _gated(self, row: tuple[Any, ...]) -> bool:
        """An event recorded while the queue's gate is up: the recorder is closed, or a unit() block is
        open in some thread (this one's events are held until its block ends: False)."""
        if self._closed:
            raise SdbError(f"run {self.run_id}: recorder is closed; this event would be lost")
        if self._failure is not None:  # nothing more can be written: stop the caller now, not at close
            raise self._failed()
        held = getattr(self._local, "unit", None)
        if held is not None:
            held.extend(row)
            return False
        self._queue.append_held(list(row))
        return True

    def _set_gate(self) -> None:
        # a failed write (a full disk, a lost S3 lock) raises the gate too: the next event stops the caller
        self._queue.gate = self._closed or self._units > 0 or self._failure is not None

    # -- flushing ------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered now, as one part; returns the number of events written."""
        with self._busy(), self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        # Callers only add at the end; only this method (under the lock) removes from the front, and
        # only after the part is published: nothing lost or split, and a failed write is retried.
        queued, written = len(self._queue), 0
        while written < queued:  # a part holds under 2 GiB of text: more than that takes several
            n, batch = self._queue.batch(self.run_id)
            if batch is None:
                break
            self._writer.write(batch)
            self._queue.drop(n)
            written += n
        return written

    def _background(self) -> None:
        while not self._stop.is_set():
            if len(self._queue) < self.flush_events:  # else the queue filled while the last part was written
                self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except BaseException as exc:  # kept, and raised to the caller at its next event or at close
                self._failure = exc
                with self._counters_lock:
                    self._set_gate()
                return

    def close(self, status: str = "complete", *, interrupted: str | None = None) -> None:
        """Flush everything and close the run. ``partial`` marks a run that did not finish. Idempotent."""
        if not self._close_once.acquire(blocking=False):
            return
        with self._busy():
            self._closed = True
            self._set_gate()
            self._stop.set()
            self._wake.set()
            if threading.current_thread() is not self._thread:
                self._thread.join()
            self._restore_signals()
            atexit.unregister(self._at_exit)
            try:
                self.flush()
            except Exception as exc:  # the run is closed as partial below, and the caller told
                self._failure = self._failure or exc
            finally:
                for name, fh in self._side.items():
                    try:
                        fh.close()
                    except OSError as exc:  # a full disk while flushing the side file: named, run partial
                        self._failure = self._failure or SdbError(f"{fh.name}: cannot write ({exc.strerror or exc})")
                    # an object store cannot append: the file goes up whole (unless the run's lock was lost)
                    if self.store.loc.remote and not self._writer.lock_lost:
                        with contextlib.suppress(OSError, SdbError):
                            self.store.loc.write_bytes(f"{self._writer.dir}/{name}", Path(fh.name).read_bytes())
                        Path(fh.name).unlink(missing_ok=True)
                ok = status == "complete" and self._failure is None
                self._writer.close("complete" if ok else "partial", interrupted=interrupted)
        if self._failure is not None:
            raise self._failed() from self._failure

    def _failed(self) -> SdbError:
        """The one line for a run whose events could not be written."""
        return SdbError(
            f"run {self.run_id}: events could not be written ({type(self._failure).__name__}: "
            f"{self._failure}); the run is partial"
        )

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Mark this thread as inside flush/close, so a signal arriving now waits until it is done."""
        outer = not getattr(self._local, "busy", False)
        self._local.busy = True
        try:
            yield
        finally:
            if outer:
                self._local.busy = False
                # signals are the main thread's: only it handles one that waited for it
                if threading.current_thread() is threading.main_thread():
                    signum, self._deferred_signal = self._deferred_signal, None
                    if signum is not None:
                        self._on_signal(signum, None)

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        """Events recorded inside this block reach disk together or not at all: they are held back and
        queued with one atomic ``list.extend`` when the block ends, so no flush splits them — a replay
        step's llm and action events, so that a resumed replay never sees half a step. A signal
        arriving inside the block is handled when it ends."""
        if getattr(self._local, "unit", None) is not None:  # nested: the outer block decides
            yield
            return
        held: list[Any] = []
        self._local.unit = held
        with self._counters_lock:
            self._units += 1
            self._set_gate()
        try:
            with self._busy():
                yield
        finally:
            # also when the block raised: its events took their seqs, and seqs stay gap-free
            self._local.unit = None
            with self._counters_lock:
                self._units -= 1
                self._set_gate()
            if held:
                if self._closed:
                    raise SdbError(f"run {self.run_id}: recorder is closed; these events would be lost")
                self._queue.append_held(held)  # all at once: no flush can split them

    def side_file(self, name: str) -> Callable[[Mapping[str, Any]], None]:
        """An appender of JSON lines to ``runs/<run_id>/<name>``, beside the events (ground truth,
        notes): kept out of the event payloads on purpose. Thread-safe; closed with the recorder."""
        if not name.endswith(".jsonl") or "/" in name or name.startswith("."):
            raise SdbError(f"side file {name!r}: use a plain NAME.jsonl")
        if self._writer.shard:
            name = f"{name[: -len('.jsonl')]}-{self._writer.shard}.jsonl"
        with self._counters_lock:
            if name not in self._side:
                if self.store.loc.remote:  # kept locally, uploaded at close
                    self._side[name] = tempfile.NamedTemporaryFile(prefix="sdb-", suffix=name, delete=False)  # noqa: SIM115
                else:
                    self._side[name] = open(f"{self._writer.dir}/{name}", "ab")  # noqa: SIM115 - closed in close()
        fh = self._side[name]
        lock = self._counters_lock

        def append(record: Mapping[str, Any]) -> None:
            line = canonical_bytes(record) + b"\n"
            with lock:
                try:
                    fh.write(line)
                except OSError as exc:  # a full disk: one line naming the file
                    raise SdbError(f"{fh.name}: cannot write ({exc.strerror or exc})") from None

        return append

    @property
    def events_written(self) -> int:
        return self._writer.manifest.events

    @property
    def status(self) -> str:
        """The run's status as its writer left it: ``partial`` until closed complete (a run closed with
        no event is never complete)."""
        return self._writer.manifest.status

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close("partial", interrupted=exc_type.__name__)

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._restore_signals()  # here, in the main thread: close() runs in a worker thread
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)

    def _at_exit(self) -> None:
        if self._interrupted:
            self.close("partial", interrupted=self._interrupted)
        else:
            self.close()

    def _restore_signals(self) -> None:
        self._signals.restore(self._on_signal)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        if getattr(self._local, "busy", False):
            # the signal interrupted this very thread inside flush() or close(): act when it is done
            self._deferred_signal = signum
            return
        if self._closed:  # a closed recorder still in a chain of handlers only passes the signal on
            self._signals.pass_on(signum, frame)
            return
        if signum == signal.SIGINT:
            self._interrupted = "SIGINT"
            self.flush()  # KeyboardInterrupt follows; leaving the context closes the run as partial
        else:
            self.close("partial", interrupted=signal.Signals(signum).name)
        self._signals.pass_on(signum, frame)
