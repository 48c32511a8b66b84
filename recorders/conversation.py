"""Chat-completions traffic as events: the session a call belongs to, ``effect`` events for the tool
results an agent sends back, the ``llm`` event of each call and one ``action`` per tool call.

Shared by the recording proxy (live traffic), the OpenTelemetry importer (traced traffic) and the chat
importer (conversation logs), so that all write the same events for the same conversation. Calls for
one session arrive in order, from one thread (the proxy's event loop, or the importer's loop), so the
bookkeeping needs no lock.

Real logs reuse tool call ids within one conversation (frameworks that number calls per turn,
``call_0`` again and again), so calls are kept per id, in order, with how many of them are answered:
a result answers the earliest unanswered call with its id (:meth:`ConversationRecorder.tool_result`),
and in a request, which carries the whole history again on every call, the k-th tool message with
id X answers the k-th call with id X and is recorded only the first time it is seen
(:meth:`ConversationRecorder.request`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from sdbctl.sdb.agents import AgentError, SessionItem
from sdbctl.sdb.boundary import Boundary, load_actions_setting, write_actions
from sdbctl.sdb.events import canonical_bytes, shared_prefix
from sdbctl.sdb.recording import Recorder, Session
from sdbctl.sdb.redaction import HistoryRedactor, Redactor

SESSION_HEADER = "X-SDB-Session"


@dataclass
class _Call:
    """One tool call of a conversation: its action's seq (None for a call the record never saw, whose
    result came anyway), its tool name, the step of the llm call that made it, and its arguments as
    the action holds them."""

    seq: int | None
    name: str
    step: str | None
    args: Any = None


@dataclass
class _Conversation:
    session: Session
    history: HistoryRedactor  # its requests' history is redacted once, not on every call
    calls: dict[str, list[_Call]] = field(default_factory=dict)  # call id -> its calls, in order (ids are reused)
    answered: dict[str, int] = field(default_factory=dict)  # call id -> how many of its calls have a result
    llm_calls: int = 0
    # the messages of the last request scanned for tool results, and the scan's state at their end
    scanned: list[Any] = field(default_factory=list)
    names: dict[str, list[str]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def next_unanswered(self, name: str, args: tuple[Any, ...] = ()) -> str | None:
        """The id of the oldest call of tool ``name`` that has no result yet (by action seq), of those
        whose arguments are one of ``args`` when there are any: calls of one tool made at once finish
        in any order, and their arguments tell them apart."""
        best: tuple[bool, int, str] | None = None
        for call_id, calls in self.calls.items():
            k = self.answered.get(call_id, 0)
            pending = calls[k] if k < len(calls) else None
            if pending is None or pending.name != name or pending.seq is None:
                continue
            found = (pending.args not in args, pending.seq, call_id)  # a call with these arguments first
            if best is None or found < best:
                best = found
        return best[2] if best is not None else None


class _Capture:
    """An action sink that records through a session and keeps each tool call's seq."""

    def __init__(self, session: Session, actor: str | None) -> None:
        self.session = session
        self.actor = actor
        self.calls: list[tuple[str | None, int, str, Any]] = []

    def action(self, name: str, args: Any, **kwargs: Any) -> int:
        seq = self.session.action(name, args, actor=self.actor, **kwargs)
        self.calls.append((kwargs.get("call_id"), seq, name, args))
        return seq


def _digest(messages: list[Any]) -> str:
    return xxhash.xxh3_64_hexdigest(canonical_bytes(messages))


def _messages(response: Any) -> list[Any]:
    """The messages of a chat-completions answer's choices (none for another shape)."""
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list):
        return []
    return [c.get("message") for c in choices if isinstance(c, Mapping) and isinstance(c.get("message"), Mapping)]


def session_key(header: str | None, request: Mapping[str, Any]) -> str:
    """The ``X-SDB-Session`` header, else a digest of the conversation's opening (every message up to
    and including the first user message), which stays the same on every later call of it."""
    if header and header.strip():
        return header.strip()
    messages = request.get("messages")
    opening: list[Any] = []
    for message in messages if isinstance(messages, list) else []:
        opening.append(message)
        if isinstance(message, Mapping) and message.get("role") == "user":
            break
    return "conv-" + _digest(opening)


def maybe_json(value: Any) -> Any:
    """A value held as a JSON string, parsed; anything else (text that is not JSON, content parts,
    an already structured value) as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class RecordedInputs:
    """What a framework agent's session-mode adapter shares: its sessions are the inputs it was given,
    by the recorded session's id, and it takes no options."""

    name: str
    inputs: Mapping[str, Any]

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        if given:
            raise AgentError(f"agent {self.name!r} takes no options (given: {', '.join(sorted(given))})")
        return {}

    def sessions(self, n: int | None, seed: int, options: Mapping[str, Any]) -> list[SessionItem]:
        items = [SessionItem(str(k), v) for k, v in self.inputs.items()]
        return items if n is None else items[:n]


class OneSession:
    """One session's event sink where :class:`ConversationRecorder` expects a recorder: whatever
    session it asks for is that one (a framework agent replayed in session mode writes its events
    into the session the replay hands it)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def session(self, session_id: str) -> Any:
        return self.sink

    def forget_session(self, session_id: str) -> None:
        return None


class ConversationRecorder:
    """Turns chat-completions calls into events of one run."""

    def __init__(self, recorder: Recorder, redactor: Redactor, *, text_actions: bool | None = None) -> None:
        self.recorder = recorder
        self.redactor = redactor
        # whether a text answer can hold an action (a JSON object in it); False: only tool calls are
        # actions and text is speech. The project's setting (None), as a step-mode replay reads it
        self.text_actions = load_actions_setting().text_actions if text_actions is None else text_actions
        # per opening key: [session id, messages in its last request, digest of them]
        self._lineages: dict[str, list[list[Any]]] = {}
        self._failed: set[str] = set()  # sessions whose last call failed (a retry is the same call)
        self.boundary = Boundary("conversation", open_vocabulary=True)
        self.conversations: dict[str, _Conversation] = {}
        self.sessions = 0  #: the sessions written to (closed ones included)
        self.llm_events = 0
        self.actions = 0
        self.effects = 0
        self.errors = 0

    def _conversation(self, session_id: str) -> _Conversation:
        found = self.conversations.get(session_id)
        if found is None:
            found = self.conversations[session_id] = _Conversation(
                self.recorder.session(session_id), HistoryRedactor(self.redactor)
            )
            self.sessions += 1
        return found

    def close(self, session_id: str) -> None:
        """Let go of a conversation that is over (an importer's, once its last message is written):
        what was kept to record its next call (history, calls, redactions) is dropped, and the
        writer's chain of its requests with it. A later call of that session starts anew (its
        request then stored whole)."""
        if self.conversations.pop(session_id, None) is not None:
            self.recorder.forget_session(session_id)

    def session_for(self, header: str | None, request: Mapping[str, Any]) -> str:
        """The session of a call: the ``X-SDB-Session`` header, else the conversation it continues.

        Conversations are keyed by their opening (:func:`session_key`); a call whose messages extend
        the last request of a conversation with that opening continues it, and any other call starts
        a new one (``KEY-2``, ``KEY-3`` ...), so an eval that asks the same task N times, one after
        another or at once, gives N sessions. A call repeating a failed call is its retry.
        """
        if header and header.strip():
            return str(self.redactor.text(header.strip()))  # a session id may be a key or an address
        key = session_key(None, request)
        raw = request.get("messages")
        messages = list(raw) if isinstance(raw, list) else []
        lineage = self._lineages.setdefault(key, [])
        whole = _digest(messages)
        prefixes: dict[int, str] = {}  # one digest per distinct length, however many sessions share it
        for entry in reversed(lineage):
            sid, length, digest = entry
            if length < len(messages) and length not in prefixes:
                prefixes[length] = _digest(messages[:length])
            if length < len(messages) and prefixes[length] == digest:
                entry[1], entry[2] = len(messages), whole
                return str(sid)
            if length == len(messages) and digest == whole and sid in self._failed:
                return str(sid)
        sid = key if not lineage else f"{key}-{len(lineage) + 1}"
        lineage.append([sid, len(messages), whole])
        return sid

    def session(self, session_id: str) -> Session:
        return self._conversation(session_id).session

    def request(self, session_id: str, request: Mapping[str, Any], *, actor: str | None = None) -> None:
        """Record the tool results in ``request`` that were not recorded yet, each linked to its call.

        A request carries the whole history again, so the k-th tool message with id X in it answers
        the k-th call with id X, and is recorded only when no earlier request held it. A request that
        extends the last one scanned is scanned from where that one ended."""
        messages = request.get("messages")
        if not isinstance(messages, list):
            return
        conv = self._conversation(session_id)
        start = len(conv.scanned)
        if not start or shared_prefix(conv.scanned, messages) < start:
            start, conv.names, conv.seen = 0, {}, {}
        names = conv.names  # call id -> the tool names of the calls with that id, in order
        seen = conv.seen  # call id -> tool messages with that id so far
        conv.scanned = messages
        for message in messages[start:]:
            if not isinstance(message, Mapping):
                continue
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, Mapping) and isinstance(call.get("id"), str):
                    fn = call.get("function")
                    name = fn.get("name") if isinstance(fn, Mapping) else None
                    names.setdefault(call["id"], []).append(str(name or "?"))
            call_id = message.get("tool_call_id")
            if message.get("role") == "tool" and isinstance(call_id, str):
                k = seen.get(call_id, 0)
                seen[call_id] = k + 1
                known = names.get(call_id, [])
                self.tool_result(
                    session_id,
                    call_id,
                    known[k] if k < len(known) else "?",
                    maybe_json(message.get("content")),
                    actor=actor,
                    index=k,
                )

    def tool_result(
        self,
        session_id: str,
        call_id: str | None,
        name: str,
        result: Any,
        *,
        args: Any = None,
        actor: str | None = None,
        status: str = "ok",
        content_missing: bool = False,
        index: int | None = None,
    ) -> int | None:
        """The result of a call with id ``call_id``: an ``effect`` linked to the call's action (its seq
        is returned; None when that result is already recorded).

        Ids are reused within a conversation: the result answers the earliest unanswered call with
        that id, or, with ``index``, the index-th (0-based) call with that id, unless that one is
        answered already. Without a call id, the oldest unanswered call of tool ``name`` is the one
        answered. A result whose call the record has not seen is an effect named ``name`` with no
        parent; with ``args`` (its call's arguments are known, the answer was not captured) its call
        gets an action first, with no llm parent, so the differ does not count it as a step."""
        conv = self._conversation(session_id)
        if call_id is None:  # a tool span with no call id: the oldest unanswered call of that tool
            found = conv.next_unanswered(name, () if args is None else (args, self.redactor.redact(args)))
            call_id = found if found is not None else f"{name}#{sum(conv.answered.values())}"
        calls = conv.calls.setdefault(call_id, [])
        done = conv.answered.get(call_id, 0)
        k = done if index is None else index
        if k < done:
            return None
        while len(calls) <= k:  # results of calls the record never saw keep their places
            calls.append(_Call(None, name, None))
        conv.answered[call_id] = k + 1
        call = calls[k]
        parent, known, step = call.seq, call.name, call.step
        if parent is None and args is not None:
            safe = self.redactor.redact(args)
            parent = call.seq = conv.session.action(
                name, safe if isinstance(safe, Mapping) else {"(arguments)": safe}, call_id=call_id, actor=actor
            )
            self.actions += 1
        body = {"call_id": call_id, "content": self.redactor.redact(result)}
        if content_missing:
            body["content_missing"] = True
        seq = conv.session.effect(known, body, parent=parent, step=step, actor=actor, status=status)
        self.effects += 1
        return seq

    def answer(
        self,
        session_id: str,
        request: Mapping[str, Any],
        response: Any,
        *,
        model: str,
        latency_ms: float | None,
        parent: int | None = None,
        actor: str | None = None,
        content_missing: bool = False,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        step: str | None = None,
    ) -> int:
        """Record one answered call: the llm event (``step`` = the n-th call of the conversation, the
        differ's unit, unless the caller names it), then the actions the boundary finds in the answer.
        Returns the llm seq."""
        conv = self._conversation(session_id)
        self._failed.discard(session_id)
        req = conv.history.redact(request)
        resp = self.redactor.redact(response)
        for raw, done in zip(_messages(response), _messages(resp), strict=False):
            conv.history.remember(raw, done)  # the next request holds it again: redacted once
        conv.llm_calls += 1
        step = step or f"call-{conv.llm_calls:03d}"
        seq = conv.session.llm(
            req,
            resp,
            model=model,
            name="chat",
            step=step,
            latency_ms=round(latency_ms, 3) if latency_ms is not None else None,
            parent=parent,
            actor=actor,
            content_missing=content_missing,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            history_unchanged=True,  # the history redactor's items: values this recorder made, never changed
        )
        self.llm_events += 1
        if content_missing:
            return seq
        capture = _Capture(conv.session, actor)
        write_actions(capture.action, self.boundary, resp, seq, {"step": step}, text_actions=self.text_actions)
        for call_id, action_seq, name, args in capture.calls:
            if call_id:
                conv.calls.setdefault(call_id, []).append(_Call(action_seq, name, step, args))
        self.actions += len(capture.calls)
        return seq

    def failure(
        self,
        session_id: str,
        request: Mapping[str, Any],
        status: int | None,
        body: Any,
        *,
        parent: int | None = None,
        actor: str | None = None,
    ) -> int:
        """A failed call: an ``error`` event (counted apart from divergence), not an llm step."""
        conv = self._conversation(session_id)
        message = f"upstream answered HTTP {status}" if status else "model call failed"
        detail = {"status": status, "body": self.redactor.redact(body), "request": self.redactor.redact(request)}
        self.errors += 1
        self._failed.add(session_id)
        return conv.session.error("chat", message, detail=detail, parent=parent, actor=actor)
