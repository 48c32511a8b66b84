"""One agent episode's recording methods: each checks its fields, writes its payload as canonical JSON,
takes the session's next ``seq`` and queues one row. That is all the caller pays for."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from sdbctl.sdb.errors import PayloadError
from sdbctl.sdb.events import STATUSES, RequestChain, canonical_bytes, digest, gate_status, llm_name
from sdbctl.sdb.recording._fields import INT64_MAX, INT64_MIN, check_count, check_latency, usage, utf8, wrong_field

_STATUSES: Final = frozenset(STATUSES)


def _own(payload: bytes) -> bytes:
    """A copy of orjson's output that is only as large as its text. orjson returns its text in the
    4 KiB buffer it wrote it into (``sys.getsizeof`` does not show it): kept as it is in a queue of
    65,536 events, a 20-byte payload would hold 256 MiB, and the allocations alone cost ~2 us an
    event. A payload built by concatenation is already a new, tight object."""
    return bytes(memoryview(payload))


def _check_status(status: str) -> None:
    if status != "ok" and (type(status) is not str or status not in _STATUSES):
        raise PayloadError(f"status {status!r} is not one of {', '.join(STATUSES)}")


class Session:
    """One agent episode inside a run. Every method records one event and returns its ``seq``.

    ``seq`` is gap-free and 0-based per session, also when several threads record into one session.
    The recorder (:meth:`Recorder.session`) gives it what it writes with: ``append`` queues a row,
    ``next_seq`` takes the session's next ``seq``, ``clock`` gives an event's time (ns since the epoch),
    ``chain`` the session's last requests, from which an llm event stores only what is new
    (:mod:`sdb.events._linear`; None: every request whole).
    """

    __slots__ = ("_append", "_chain", "_clock", "_next_seq", "actor", "pattern", "session_id")

    def __init__(
        self,
        session_id: str,
        actor: str,
        pattern: str,
        *,
        append: Callable[[tuple[Any, ...]], bool | None],
        next_seq: Callable[[], int],
        clock: Callable[[], int],
        chain: RequestChain | None = None,
    ) -> None:
        self.session_id = session_id
        self._chain = chain
        self.actor = actor
        self.pattern = pattern
        self._append = append
        self._next_seq = next_seq
        self._clock = clock

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
        payload: bytes | tuple[bytes, bytes, Any, bool],
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
        replay: bytes | None = None,
    ) -> int:
        """Take the next seq and queue one row (the columns after run_id, in schema order). ``replay``
        is the canonical JSON of the replay mark the event was written with (column ``replay``: the
        one rule, here, for every event of a recording). The fields are checked first, so a name that
        is not UTF-8 text is a PayloadError, never a UnicodeEncodeError from the digest of ``name`` and
        ``digest_body``.

        An llm event's payload is ``(head, tail, request, history_unchanged)``: its request member is
        encoded by the session's chain between the two, under the chain's lock, and its digest is of
        the whole request (``digest_body`` is then unused)."""
        if not (  # the common case, plain strings and an int parent, in one expression
            type(name) is str
            and (step is None or type(step) is str)
            and (parent is None or (type(parent) is int and INT64_MIN <= parent <= INT64_MAX))
            and (actor is None or type(actor) is str)
            and (pattern is None or type(pattern) is str)
            # UTF-8 text: ASCII, the common case, is known without a call
            and (
                (name.isascii() and (step is None or step.isascii()) and not actor and not pattern)
                or utf8(name, step, actor, pattern)
            )
        ):
            raise PayloadError(wrong_field(name, step, parent, actor, pattern))
        if isinstance(payload, bytes):
            dig = digest(name, digest_body)
            seq = self._next_seq()
            self._append(
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
                    replay,
                )
            )
            return seq
        head, tail, request, unchanged = payload
        chain = self._chain or RequestChain()  # no chain: a chain of one, which stores the request whole
        with chain.lock:
            member, whole, state = chain.encode(request, unchanged=unchanged)  # not JSON: no seq taken
            dig = digest(name, whole)
            seq = self._next_seq()
            row = (self.session_id, seq, step, parent, self._clock(), kind, actor or self.actor,
                   pattern or self.pattern, name, model, prompt, head + member + tail, dig, status,
                   latency_ms, tokens_in, tokens_out, replay)  # fmt: skip
            queued = self._append(row) is not False
            chain.keep(seq, state, shared=queued)  # held in this thread's unit(): only this thread starts from it
        return seq

    def input(
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
        return self._put("input", name, _own(body), body, step, None, "ok", actor, pattern)

    def llm(
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
        history_unchanged: bool = False,
    ) -> int:
        """A model call: the request, the raw response, and the prompt ``name@version``. The request
        is stored as what is new since an earlier call of the session (``request_delta``) when it
        shares its history with one, and is read back whole (:func:`sdb.events.session_requests`).
        ``history_unchanged``: the caller never changes a value after handing it over (a log's parsed
        messages), so a list's leading items that are the very objects of the previous call's are
        not written again (its text is kept; the recorders of :mod:`recorders.conversation` say so).

        ``content_missing`` marks a call whose messages were not captured (a trace recorded without
        content): it is kept for its place, model, timing and tokens, and a step-mode replay skips it.

        ``variables`` are the prompt template's variables, kept so that a replay can re-render the
        prompt under another version. Token counts default to the response's ``usage`` block. The
        digest is of the request: two runs asked the same question when their llm digests agree.
        """
        if latency_ms is not None:
            latency_ms = check_latency(latency_ms)
        if tokens_in is not None or tokens_out is not None:
            check_count("tokens_in", tokens_in)
            check_count("tokens_out", tokens_out)
        if type(model) is not str or (prompt is not None and type(prompt) is not str):
            if not isinstance(model, str) or (prompt is not None and not isinstance(prompt, str)):
                raise PayloadError("model must be a string (and prompt, when given)")
            model, prompt = str(model), None if prompt is None else str(prompt)  # a str subclass: plain str
        if not utf8(model, prompt):
            raise PayloadError("model and prompt must be UTF-8 text (no lone surrogate)")
        if prompt is not None and "@" not in prompt:
            raise PayloadError(f"prompt {prompt!r} must be NAME@VERSION, e.g. offer@v3")
        head = b"{" + (b'"content":"missing",' if content_missing else b"")
        mark = None if replay is None else _own(canonical_bytes(replay))
        if mark is not None:
            head += b'"replay":' + mark + b","
        tail = b',"response":' + canonical_bytes(response)
        if variables is not None:
            tail += b',"variables":' + canonical_bytes(variables)
        tail += b"}"
        if tokens_in is None or tokens_out is None:
            uin, uout = usage(response)
            tokens_in = uin if tokens_in is None else tokens_in
            tokens_out = uout if tokens_out is None else tokens_out
        label = llm_name(name, prompt)
        return self._put(
            "llm", label, (head, tail, request, history_unchanged), b"", step, parent, "ok", actor, pattern,
            model, prompt, latency_ms, tokens_in, tokens_out, mark,
        )  # fmt: skip

    def action(
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
        """
        body = canonical_bytes(args)
        mark = None if replay is None else _own(canonical_bytes(replay))
        if call_id is None and error is None and mark is None:
            payload = b'{"args":' + body + b"}"
        else:
            payload = b'{"args":' + body + b',"call_id":' + canonical_bytes(call_id)
            if error is not None:
                payload += b',"error":' + canonical_bytes(error)
            if mark is not None:
                payload += b',"replay":' + mark
            payload += b"}"
        _check_status(status)
        return self._put("action", name, payload, body, step, parent, status, actor, pattern, replay=mark)

    def gate(
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
        status = status or gate_status(decision)
        _check_status(status)
        return self._put("gate", name, payload, body, step, parent, status, actor, pattern)

    def effect(
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
        _check_status(status)
        return self._put("effect", name, b'{"result":' + body + b"}", body, step, parent, status, actor, pattern)

    def state(
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
        return self._put("state", name, _own(body), body, step, parent, "ok", actor, pattern)

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
        mark = None
        if replay is not None:
            fields["replay"] = replay
            mark = _own(canonical_bytes(replay))
        body = _own(canonical_bytes(fields))
        return self._put(
            "error", name, body, canonical_bytes(message), step, parent, "error", actor, pattern, replay=mark
        )
