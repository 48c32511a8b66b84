"""The in-process recorder: cheap for the caller, durable in the background.

A call such as ``session.action(...)`` serialises its payload to canonical JSON, takes the session's
next ``seq`` and appends one row to a lock-free queue; that is all the caller pays for. A background
writer drains the queue into Arrow record batches and publishes them as Parquet parts when the queue
reaches ``flush_events`` rows or every ``flush_interval`` seconds, whichever comes first. Leaving the
context, normal interpreter exit, SIGINT and SIGTERM flush what is buffered.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import itertools
import operator
import os
import secrets
import signal
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
import xxhash

from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events.canonical import canonical_bytes, digest
from sdbctl.sdb.events.kinds import STATUSES
from sdbctl.sdb.events.queue import EventQueue, new_queue
from sdbctl.sdb.native import native as _native
from sdbctl.sdb.redaction import RedactingSession, sdk_redactor
from sdbctl.sdb.store.layout import Store, check_run_id
from sdbctl.sdb.store.writer import RunWriter

_xxh3 = xxhash.xxh3_64_intdigest
_dumps = orjson.dumps
_STATUSES: Final = frozenset(STATUSES)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_ALLOW: Final = frozenset({"allow", "allowed", "approve", "approved", "pass", "passed", "ok", "accept"})
_MANIFEST_KEYS: Final = ("source_run", "model", "prompts", "mode", "agent", "git_commit", "repeat")
_SignalHandler = Callable[[int, types.FrameType | None], Any] | int | None


def manifest_fields(meta: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``meta`` split into what the run manifest holds as fields (model, prompts, mode, agent,
    source_run, git_commit, repeat) and the rest, which it keeps under ``meta``."""
    rest = dict(meta or {})
    fields: dict[str, Any] = {k: rest.pop(k) for k in _MANIFEST_KEYS if k in rest}
    if isinstance(fields.get("prompts"), str):
        fields["prompts"] = [fields["prompts"]]
    return rest, fields


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 6 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _resumed_counters(store: Store, run_id: str) -> dict[str, Callable[[], int]]:
    """Per-session seq counters that continue after the events already in a run."""
    last: dict[str, int] = {}
    for part in store.part_paths(run_id):
        table = store.loc.read_parquet(part, columns=["session_id", "seq"])
        for row in table.group_by("session_id").aggregate([("seq", "max")]).to_pylist():
            last[row["session_id"]] = max(last.get(row["session_id"], -1), int(row["seq_max"]))
    return {session: _new_counter(seq + 1) for session, seq in last.items()}


def _new_counter(start: int = 0) -> Callable[[], int]:
    """A session's seq counter: each call returns the next int, atomically under the GIL."""
    return _native.Counter(start) if _native is not None else itertools.count(start).__next__


def _field_types(name: Any, step: Any, parent: Any, actor: Any, pattern: Any) -> str:
    """Which event field has the wrong type: checked when the event is recorded, never at flush."""
    for label, value, want in (
        ("name", name, "a string"),
        ("step", step, "a string or None"),
        ("parent", parent, "an int seq or None"),
        ("actor", actor, "a string or None"),
        ("pattern", pattern, "a string or None"),
    ):
        if label == "name" and type(value) is not str:
            return f"{label} must be {want}, not {type(value).__name__}"
        if label == "parent" and value is not None and type(value) is not int:
            return f"{label} must be {want}, not {type(value).__name__}"
        if label == "parent" and value is not None and not _INT64_MIN <= value <= _INT64_MAX:
            return f"parent {value} is out of the range of a seq"
        if label not in ("name", "parent") and value is not None and type(value) is not str:
            return f"{label} must be {want}, not {type(value).__name__}"
        if label != "parent" and not _utf8(value):
            return f"{label} {value!r} cannot be written as UTF-8 (a lone surrogate)"
    return "an event field has the wrong type"


def _utf8(*texts: str | None) -> bool:
    """True when every text can be written as UTF-8 (none holds a lone surrogate). ASCII, the common
    case, is known without encoding."""
    for text in texts:
        if text is not None and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                return False
    return True


def _int_clock(clock: Callable[[], Any]) -> Callable[[], int]:
    def now() -> int:
        return operator.index(clock())

    return now


def _int64(value: Any) -> int | None:
    """An int that fits the int64 columns (tokens), else None."""
    return value if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX else None


def _usage(response: Any) -> tuple[int | None, int | None]:
    """Token counts from an OpenAI (``prompt_tokens``) or Anthropic (``input_tokens``) usage block."""
    if not isinstance(response, Mapping):
        return None, None
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    tin = usage.get("prompt_tokens", usage.get("input_tokens"))
    tout = usage.get("completion_tokens", usage.get("output_tokens"))
    return _int64(tin), _int64(tout)


def _gate_status(decision: Any) -> str:
    """``ok`` for an allowing decision (True, "allow", "approved", ...), else ``gated``."""
    if decision is True:
        return "ok"
    if isinstance(decision, str) and decision.strip().lower() in _ALLOW:
        return "ok"
    return "gated"


class _PySessionCore:
    """What :class:`sdb._native.SessionCore` holds, for the pure-Python path."""

    __slots__ = ("_clock", "_next_seq", "_queue", "actor", "pattern", "recorder", "session_id")

    def __init__(self, recorder: Recorder, session_id: str, actor: str, pattern: str) -> None:
        self.recorder = recorder
        self.session_id = session_id
        self.actor = actor
        self.pattern = pattern
        self._queue = recorder._queue
        self._next_seq = recorder._counter(session_id)
        self._clock = recorder.clock


if TYPE_CHECKING or _native is None:  # noqa: SIM108 - mypy reads the first branch as the type
    _SessionCore = _PySessionCore
else:
    _SessionCore = _native.SessionCore


class Session(_SessionCore):
    """One agent episode inside a run. Every method records one event and returns its ``seq``.

    ``seq`` is gap-free and 0-based per session, also when several threads record into one session.
    With the C extension built, each recording method (input, llm, action, gate, effect, state) runs
    its common case in C and hands everything else to the Python method below (``_action_py`` and so
    on); either way the same event is written.
    """

    __slots__ = ()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def _put(
        self,
        kind: str,
        name: str,
        payload: bytes,
        digest_body: bytes,
        step: str | None,
        parent: int | None,
        status: str,
        actor: str | None,
        pattern: str | None,
        model: str | None = None,
        prompt: str | None = None,
        latency_ms: float | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
    ) -> int:
        """Take the next seq and queue one row (the columns after run_id, in schema order); the digest is
        of ``name`` and ``digest_body``, taken once the fields are checked (a name that is not UTF-8
        text is a PayloadError, never a UnicodeEncodeError)."""
        if not (
            type(name) is str
            and (step is None or type(step) is str)
            and (parent is None or (type(parent) is int and _INT64_MIN <= parent <= _INT64_MAX))
            and (actor is None or type(actor) is str)
            and (pattern is None or type(pattern) is str)
            and _utf8(name, step, actor, pattern)
        ):
            raise PayloadError(_field_types(name, step, parent, actor, pattern))
        dig = digest(name, digest_body)
        seq = self._next_seq()
        self._queue.append(
            (
                self.session_id,
                seq,
                step,
                parent,
                self._clock(),
                kind,
                actor or self.actor,
                pattern or self.pattern,
                name,
                model,
                prompt,
                payload,
                dig,
                status,
                latency_ms,
                tokens_in,
                tokens_out,
            )
        )
        return seq

    def _input_py(
        self,
        name: str,
        payload: Any,
        *,
        step: str | None = None,
        actor: str | None = None,
        pattern: str | None = None,
    ) -> int:
        """An input to the episode: a contract, a user message, a human decision."""
        body = canonical_bytes(payload)
        return self._put("input", name, body, body, step, None, "ok", actor, pattern)

    def _llm_py(
        self,
        request: Any,
        response: Any,
        *,
        model: str,
        prompt: str | None = None,
        step: str | None = None,
        variables: Mapping[str, Any] | None = None,
        name: str | None = None,
        latency_ms: float | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        parent: int | None = None,
        actor: str | None = None,
        pattern: str | None = None,
        replay: Mapping[str, Any] | None = None,
        content_missing: bool = False,
    ) -> int:
        """A model call: the whole request, the raw response, and the prompt ``name@version``.

        ``content_missing`` marks a call whose messages were not captured (a trace recorded without
        content): it is kept for its place, model, timing and tokens, and a step-mode replay skips it.

        ``variables`` are the prompt template's variables, kept so that a replay can re-render the
        prompt under another version. Token counts default to the response's ``usage`` block. The
        digest is of the request: two runs asked the same question when their llm digests agree.
        """
        if latency_ms is not None:
            if type(latency_ms) is bool or not isinstance(latency_ms, int | float):
                raise PayloadError(f"latency_ms must be a number, not {type(latency_ms).__name__}")
            try:
                latency_ms = float(latency_ms)
            except OverflowError:
                raise PayloadError(f"latency_ms {latency_ms} is too large") from None
        for label, value in (("tokens_in", tokens_in), ("tokens_out", tokens_out)):
            if value is not None and (type(value) is bool or not isinstance(value, int)):
                raise PayloadError(f"{label} must be an integer, not {type(value).__name__}")
            if value is not None and _int64(value) is None:
                raise PayloadError(f"{label} {value} is out of range")
        if not isinstance(model, str) or (prompt is not None and not isinstance(prompt, str)):
            raise PayloadError("model must be a string (and prompt, when given)")
        model, prompt = str(model), None if prompt is None else str(prompt)  # a str subclass: plain str
        if not _utf8(model, prompt):
            raise PayloadError("model and prompt must be UTF-8 text (no lone surrogate)")
        if prompt is not None and "@" not in prompt:
            raise PayloadError(f"prompt {prompt!r} must be NAME@VERSION, e.g. offer@v3")
        req = canonical_bytes(request)
        parts = [b'{"replay":', canonical_bytes(replay)] if replay is not None else [b"{"]
        parts += [b"," if replay is not None else b"", b'"request":', req, b',"response":', canonical_bytes(response)]
        if variables is not None:
            parts += [b',"variables":', canonical_bytes(variables)]
        if content_missing:
            parts.append(b',"content":"missing"')
        parts.append(b"}")
        if tokens_in is None or tokens_out is None:
            uin, uout = _usage(response)
            tokens_in = uin if tokens_in is None else tokens_in
            tokens_out = uout if tokens_out is None else tokens_out
        label = name or (prompt.split("@", 1)[0] if prompt else "chat")
        return self._put(
            "llm",
            label,
            b"".join(parts),
            req,
            step,
            parent,
            "ok",
            actor,
            pattern,
            model,
            prompt,
            latency_ms,
            tokens_in,
            tokens_out,
        )

    def _action_py(
        self,
        name: str,
        args: Any,
        *,
        step: str | None = None,
        status: str = "ok",
        parent: int | None = None,
        call_id: str | None = None,
        error: Any = None,
        actor: str | None = None,
        pattern: str | None = None,
        replay: Mapping[str, Any] | None = None,
    ) -> int:
        """An action the model proposed (a tool call); its digest is of ``name`` + canonical ``args``.

        ``error`` says why a proposal failed (the parse reason, or the field errors of ``invalid``).

        The hot path of a recording: :meth:`_put` is inlined here (and the common case is in C).
        """
        if not (
            type(name) is str
            and (step is None or type(step) is str)
            and (parent is None or (type(parent) is int and _INT64_MIN <= parent <= _INT64_MAX))
            and (actor is None or type(actor) is str)
            and (pattern is None or type(pattern) is str)
            and _utf8(name, step, actor, pattern)
        ):
            raise PayloadError(_field_types(name, step, parent, actor, pattern))
        body = canonical_bytes(args)
        if call_id is None and error is None and replay is None:
            payload = b'{"args":' + body + b"}"
        else:
            payload = b'{"args":' + body + b',"call_id":' + _dumps(call_id)
            if error is not None:
                payload += b',"error":' + canonical_bytes(error)
            if replay is not None:
                payload += b',"replay":' + canonical_bytes(replay)
            payload += b"}"
        if status != "ok" and status not in _STATUSES:
            raise PayloadError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        seq = self._next_seq()
        self._queue.append(
            (
                self.session_id,
                seq,
                step,
                parent,
                self._clock(),
                "action",
                actor or self.actor,
                pattern or self.pattern,
                name,
                None,
                None,
                payload,
                _xxh3(name.encode() + b"\x00" + body),
                status,
                None,
                None,
                None,
            )
        )
        return seq

    def _gate_py(
        self,
        name: str,
        decision: Any,
        reason: str | None = None,
        *,
        parent: int | None = None,
        step: str | None = None,
        status: str | None = None,
        actor: str | None = None,
        pattern: str | None = None,
    ) -> int:
        """A guard's decision on an action. ``status`` is ``ok`` when the decision allows, else ``gated``."""
        body = canonical_bytes(decision)
        payload = b'{"decision":' + body + b',"reason":' + canonical_bytes(reason) + b"}"
        status = status or _gate_status(decision)
        if status not in _STATUSES:
            raise PayloadError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        return self._put("gate", name, payload, body, step, parent, status, actor, pattern)

    def _effect_py(
        self,
        name: str,
        result: Any,
        *,
        parent: int | None = None,
        step: str | None = None,
        status: str = "ok",
        actor: str | None = None,
        pattern: str | None = None,
    ) -> int:
        """The result of executing an action (the commit): what the handler returned."""
        body = canonical_bytes(result)
        if status not in _STATUSES:
            raise PayloadError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        payload = b'{"result":' + body + b"}"
        return self._put("effect", name, payload, body, step, parent, status, actor, pattern)

    def _state_py(
        self,
        name: str,
        payload: Any,
        *,
        step: str | None = None,
        parent: int | None = None,
        actor: str | None = None,
        pattern: str | None = None,
    ) -> int:
        """A state the episode moved to (``name``) and its data."""
        body = canonical_bytes(payload)
        return self._put("state", name, body, body, step, parent, "ok", actor, pattern)

    def error(
        self,
        name: str,
        message: str,
        *,
        detail: Any = None,
        step: str | None = None,
        parent: int | None = None,
        actor: str | None = None,
        pattern: str | None = None,
        replay: Mapping[str, Any] | None = None,
    ) -> int:
        """An error at ``name`` (a provider failure, a handler exception); counted apart from divergence."""
        fields = {"detail": detail, "message": message}
        if replay is not None:
            fields["replay"] = replay
        body = canonical_bytes(fields)
        return self._put("error", name, body, canonical_bytes(message), step, parent, "error", actor, pattern)

    # With the C extension, the public methods are SessionCore's: each runs its common case in C and
    # hands every other call to the Python method above. Without it, they are those methods.
    if TYPE_CHECKING:
        input = _input_py
        llm = _llm_py
        action = _action_py
        gate = _gate_py
        effect = _effect_py
        state = _state_py


for _kind in ("input", "llm", "action", "gate", "effect", "state"):
    _method = getattr(Session, f"_{_kind}_py")
    # errors and tracebacks name the public method (Session.action), also when C handed the call over
    _method.__code__ = _method.__code__.replace(co_name=_kind, co_qualname=f"Session.{_kind}")
    _method.__name__, _method.__qualname__ = _kind, f"Session.{_kind}"
    if _native is None:
        setattr(Session, _kind, _method)


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
        self.clock = clock if clock is time.time_ns else _int_clock(clock)
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
        self._counters: dict[str, Callable[[], int]] = (
            _resumed_counters(self.store, self.run_id) if resume or shard is not None else {}
        )
        self._wake = threading.Event()
        self._queue: EventQueue = new_queue(flush_events, self._wake.set, self._gated, self._counters)
        self._units = 0  # unit() blocks open, in any thread
        self._counters_lock = threading.Lock()
        self._side: dict[str, Any] = {}
        self._flush_lock = threading.Lock()
        self._close_once = threading.Lock()  # acquired once, by the first close(), never released
        self._local = threading.local()
        self._deferred_signal: int | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._interrupted: str | None = None
        self._previous: dict[int, _SignalHandler] = {}
        self._thread = threading.Thread(target=self._background, name=f"sdb-writer-{self.run_id}", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)
        if handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)

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
            if not _utf8(sid, actor, pattern):
                raise PayloadError("session id, actor and pattern must be UTF-8 text (no lone surrogate)")
        if self._redactor is not None:
            return RedactingSession(Session(self, sid, actor, pattern), self._redactor)  # type: ignore[return-value]
        return Session(self, sid, actor, pattern)

    def _counter(self, session_id: str) -> Callable[[], int]:
        if _native is not None:  # the C queue hands them out, atomically
            return self._queue.counter(session_id)  # type: ignore[attr-defined, no-any-return]
        with self._counters_lock:
            counter = self._counters.get(session_id)
            if counter is None:
                counter = self._counters[session_id] = _new_counter()
            return counter

    def _gated(self, row: tuple[Any, ...]) -> None:
        """An event recorded while the queue's gate is up: the recorder is closed, or a unit() block is
        open in some thread (this one's events are held until its block ends)."""
        if self._closed:
            raise SdbError(f"run {self.run_id}: recorder is closed; this event would be lost")
        held = getattr(self._local, "unit", None)
        if held is not None:
            held.extend(row)
        else:
            self._queue.append_held(list(row))

    def _set_gate(self) -> None:
        self._queue.gate = self._closed or self._units > 0

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
            self._writer.write(batch, vocabulary=self._queue.vocabulary)
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
            except BaseException as exc:  # kept and raised to the caller at close
                self._failure = exc
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
                    if self.store.loc.remote:  # an object store cannot append: the file goes up whole
                        with contextlib.suppress(OSError, SdbError):
                            self.store.loc.write_bytes(f"{self._writer.dir}/{name}", Path(fh.name).read_bytes())
                        Path(fh.name).unlink(missing_ok=True)
                ok = status == "complete" and self._failure is None
                self._writer.close("complete" if ok else "partial", interrupted=interrupted)
        if self._failure is not None:
            raise SdbError(
                f"run {self.run_id}: events could not be written ({type(self._failure).__name__}: "
                f"{self._failure}); the run is partial"
            ) from self._failure

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
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        # _previous is kept: a recorder opened after this one may still chain to our handler, which
        # then only passes the signal on (see _on_signal)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        if getattr(self._local, "busy", False):
            # the signal interrupted this very thread inside flush() or close(): act when it is done
            self._deferred_signal = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        if self._closed:  # a closed recorder still in a chain of handlers only passes the signal on
            self._pass_on(signum, frame, previous)
            return
        if signum == signal.SIGINT:
            self._interrupted = "SIGINT"
            self.flush()  # KeyboardInterrupt follows; leaving the context closes the run as partial
        else:
            self.close("partial", interrupted=signal.Signals(signum).name)
        self._pass_on(signum, frame, previous)

    @staticmethod
    def _pass_on(signum: int, frame: types.FrameType | None, previous: _SignalHandler) -> None:
        """Hand the signal to the handler that was there before ours (the default one kills)."""
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL or previous is None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
