"""Linear storage of a session's ``llm`` requests: each call stores what is new since an earlier call
of its session, not the whole history again.

A conversation's request repeats every message before it, so storing each request whole costs the
square of the conversation's length in bytes, time and memory (a 1,000-turn log of 1 MB was 534 MB
of payload). An ``llm`` event's payload holds either ``"request"`` (the request, whole: the first
call of a session, or one that shares nothing with the calls before it; every event of schema
version 1) or ``"request_delta"``::

    {"from": 12,                              # the seq of an earlier llm event of the same session
     "same": ["model", "tools"],              # keys whose value is that request's
     "extend": {"messages": [30, [m31, m32]]},  # that request's first 30 items, then these
     "set": {"temperature": 0.2}}             # keys whose value is given here

and the request is exactly the keys named in ``same``, ``extend`` and ``set``. The writer
(:class:`RequestChain`) checks, before it stores a delta, that the request read back from it has the
canonical JSON of the request it was given, byte for byte, and stores the request whole otherwise;
the reader (:func:`session_requests`) is the only code that reads a stored request, so every reader
(step and session replay, export, ``show --full``, ``rm``'s cache keys, the ``requests`` view of
``query``) gets the request back whole, as it was asked. The digest of an llm event is still that of
its whole request.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import orjson

from sdbctl.sdb.errors import SchemaError
from sdbctl.sdb.events._canonical import canonical_bytes, shared_prefix, written_as_is

DELTA_KEY: Final = "request_delta"
WINDOW: Final = 4  # the earlier calls of a session a delta may start from (agents of one session take turns)
CHAINS: Final = 4096  # the sessions a writer keeps its last requests for (an older one stores its next request whole)


def _text(value: Any) -> bytes:
    """The canonical JSON of ``value``, a value parsed from canonical JSON (so orjson writes it so)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _written(texts: Mapping[str, bytes]) -> bytes:
    """The JSON text of an object whose values' texts are ``texts``, keys sorted as orjson sorts them
    (by code point): what orjson writes for that object, put together with one copy."""
    parts = [b"{"]
    for key, text in sorted(texts.items()):
        parts += (_text(key), b":", text, b",")
    parts[-1] = b"}"
    return b"".join(parts) if texts else b"{}"


def _extended(old: list[Any], old_text: bytes, items: Any, text: bytes) -> tuple[int, int]:
    """``(n, at)``: ``items`` (whose JSON text is ``text``) begins with the first ``n`` items of
    ``old`` (whose canonical JSON is ``old_text``), byte for byte, and its text has, at ``at``, the
    ``,`` or ``]`` after them; ``(0, 0)`` when none. A conversation's history is the common case: a
    text that begins with the other's (JSON values delimit themselves), found without a walk."""
    n = len(old)
    if n and text[len(old_text) - 1 : len(old_text)] == b"," and text.startswith(memoryview(old_text)[:-1]):
        return n, len(old_text) - 1
    n = shared_prefix(old, list(items))  # an edited history: the values canonical JSON tells equal
    if not n:
        return 0, 0
    prefix = b"[" + b",".join(_text(x) for x in old[:n])
    if text.startswith(prefix) and text[len(prefix) : len(prefix) + 1] in (b",", b"]"):
        return n, len(prefix)
    return 0, 0


def _appended(known: tuple[list[Any], bytes], items: list[Any]) -> bytes | None:
    """The text of ``items`` when they begin with the very objects ``known`` holds (with their
    list's text) and nothing changes a value once handed over: only the new items are written."""
    before, text = known
    n = len(before)
    if not n or len(items) < n or not all(map(operator.is_, before, items)):
        return None
    parts = [written_as_is(item) for item in items[n:]]
    if not parts:
        return text
    if None in parts:
        return None
    return b"".join((text[:-1], b",", b",".join(parts), b"]"))  # type: ignore[arg-type]


class _Delta:
    """A delta of one request from one earlier request, as the writer found it by comparing their
    values' canonical JSON (``texts``): the keys whose text is the same, the lists whose text begins
    with the earlier one's, and the values given anew."""

    __slots__ = ("at", "complete", "extend", "kept", "same", "values")

    def __init__(
        self,
        base: Mapping[str, Any],
        base_texts: Mapping[str, bytes],
        request: Mapping[str, Any],
        texts: Mapping[str, bytes],
    ) -> None:
        self.complete = len(base) <= len(request)  # it takes all of base: an older one cannot hold more
        self.same: list[str] = []
        self.extend: dict[str, list[Any]] = {}
        self.at: dict[str, int] = {}  # where each extended list's new items begin in its text
        self.values: dict[str, Any] = {}
        self.kept = 0  # the values and list items it takes from base (the larger, the better the start)
        for key, value in request.items():
            old = base.get(key, _MISSING)
            if old is _MISSING:
                self.values[key] = value
                continue
            listed = type(old) is list
            if texts[key] == base_texts[key]:
                self.same.append(key)
                self.kept += len(old) if listed else 1
            elif listed and isinstance(value, list | tuple):
                n, at = _extended(old, base_texts[key], value, texts[key])
                if n:
                    self.extend[key] = [n, list(value[n:])]
                    self.at[key] = at
                else:
                    self.values[key] = value
                self.kept += n
                self.complete = self.complete and n == len(old)
            else:
                self.values[key] = value
                self.complete = False

    def body(self, start: int) -> dict[str, Any]:
        """The ``request_delta`` member, starting from llm event ``start``."""
        out: dict[str, Any] = {"from": start}
        if self.same:
            out["same"] = sorted(self.same)
        if self.extend:
            out["extend"] = self.extend
        if self.values:
            out["set"] = self.values
        return out

    def as_given(self, stored: Mapping[str, Any], texts: Mapping[str, bytes]) -> bool:
        """Whether the new values of ``stored`` (this delta as its canonical JSON reads back) are
        written as the request's were (``texts``), byte for byte: a ``True`` stored for a ``1``, or an
        integral float or a NaN made canonical, are not."""
        for key, value in stored.get("set", {}).items():
            if _text(value) != texts[key]:
                return False
        for key, (_, items) in stored.get("extend", {}).items():
            text, at = texts[key], self.at[key]
            tail = b"," + _text(items)[1:] if items else b"]"
            if len(text) - at != len(tail) or not text.endswith(tail):
                return False
        return True


_MISSING: Final = object()


def _apply(base: Mapping[str, Any], delta: Any, where: str) -> dict[str, Any]:
    """The request ``delta`` describes, from the request ``base``; a delta that does not fit it is a
    damaged store, said in one line naming the event."""
    if not isinstance(delta, dict):
        raise SchemaError(f"{where}: its request_delta is not an object")
    out: dict[str, Any] = {}
    same, extend, values = delta.get("same", []), delta.get("extend", {}), delta.get("set", {})
    if not isinstance(same, list) or not isinstance(extend, dict) or not isinstance(values, dict):
        raise SchemaError(f"{where}: its request_delta is malformed")
    for key in same:
        if not isinstance(key, str) or key not in base:
            raise SchemaError(f"{where}: its request_delta keeps {key!r}, which the request it starts from lacks")
        out[key] = base[key]
    for key, spec in extend.items():
        old = base.get(key)
        if (
            not isinstance(old, list)
            or not isinstance(spec, list)
            or len(spec) != 2
            or type(spec[0]) is not int
            or not 0 < spec[0] <= len(old)
            or not isinstance(spec[1], list)
        ):
            raise SchemaError(f"{where}: its request_delta extends {key!r} beyond the request it starts from")
        out[key] = old[: spec[0]] + spec[1]
    out.update(values)
    return out


class RequestChain:
    """One session's last requests as the writer stored them, to write the next one as a delta.

    Its ``lock`` is held while the next llm event is encoded, takes its seq and is queued, so that a
    delta starts from an event queued before it (a flushed prefix of the queue is always readable)."""

    __slots__ = ("_given", "_recent", "_texts", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (seq, request as read back, the thread whose unit() still holds its event, else None), oldest first
        self._recent: list[tuple[int, dict[str, Any], int | None]] = []
        # the canonical JSON of each value of requests in _recent, by seq (for a request stored whole:
        # once a delta needed it)
        self._texts: dict[int, Mapping[str, bytes]] = {}
        # the last request's lists as given (their items, the objects) with their texts
        self._given: dict[str, tuple[list[Any], bytes]] = {}

    def encode(self, request: Any, *, unchanged: bool = False) -> tuple[bytes, bytes, Any]:
        """``(member, whole, state)``: the payload member for ``request`` (``"request":...`` or, when it
        shares values with one of the session's last requests, ``"request_delta":...``), the canonical
        JSON of the whole request (its digest's), and what to :meth:`keep` once the event has its seq.
        Raises :class:`PayloadError` for a request that is not JSON as it is. Call with :attr:`lock`
        held.

        A delta is kept only when the request read back from it (:func:`_apply`) is written as the
        request given, byte for byte; else the request is stored whole. The request read back is
        made of values parsed from canonical JSON, so orjson writes it as canonical JSON, and equal
        texts make the request's canonical JSON too (a ``True`` taken for a ``1``, an integral float
        or a NaN makes them differ). The delta is found by comparing the texts of the request's values
        with those of the earlier one's (kept with it), and only its new values are checked again, so a
        long conversation costs one serialisation of the request per call (its digest's, put together
        from its values' by :func:`_written`), in C, not a walk or a second write of its history.
        ``unchanged`` (the caller never changes a value it handed over): a list whose leading items
        are the objects of the previous request's list has that list's text and its new items'."""
        if isinstance(request, dict) and self._recent and all(type(k) is str for k in request):
            texts: dict[str, bytes] = {}
            given = self._given if unchanged else {}
            for key, value in request.items():
                known = given.get(key) if type(value) is list else None
                text = _appended(known, value) if known is not None else None
                if text is None:
                    text = written_as_is(value)
                    if text is None:  # not JSON as it is: canonical_bytes says why, below
                        break
                texts[key] = text
            else:
                found = self._delta(request, texts)
                if found is not None:
                    delta, base_seq, base = found
                    encoded = canonical_bytes(delta.body(base_seq))  # the new values checked here
                    stored = orjson.loads(encoded)
                    if delta.as_given(stored, texts):
                        state = _apply(base, stored, "request")
                        lists = {k: (list(v), texts[k]) for k, v in request.items() if type(v) is list}
                        return b'"request_delta":' + encoded, _written(texts), (state, texts, lists)
        whole = canonical_bytes(request)
        return b'"request":' + whole, whole, (orjson.loads(whole), None, None) if isinstance(request, Mapping) else None

    def _delta(
        self, request: Mapping[str, Any], texts: Mapping[str, bytes]
    ) -> tuple[_Delta, int, dict[str, Any]] | None:
        """The delta of ``request`` from the one of the session's last requests it takes the most from
        (the newest first, stopping at one it takes whole), with that one's seq and request."""
        best: tuple[_Delta, int, dict[str, Any]] | None = None
        me = threading.get_ident()
        for base_seq, base, owner in reversed(self._recent):
            if owner is not None and owner != me:  # held in another thread's unit(): maybe not queued yet
                continue
            base_texts = self._texts.get(base_seq)
            if base_texts is None:  # a request stored whole: its values written once, when first needed
                base_texts = self._texts[base_seq] = {key: _text(value) for key, value in base.items()}
            delta = _Delta(base, base_texts, request, texts)
            if delta.kept and (best is None or delta.kept > best[0].kept):
                best = (delta, base_seq, base)
            if delta.complete:
                break
        return best

    def keep(self, seq: int, state: Any, *, shared: bool = True) -> None:
        """Remember the request of llm event ``seq`` (``state`` from :meth:`encode`) for the next ones;
        not ``shared``: its event is held in this thread's unit() block, so only this thread's next
        events (queued after it) may start from it."""
        if state is None:
            return
        request, texts, lists = state
        self._recent.append((seq, request, None if shared else threading.get_ident()))
        if texts is not None:  # the newest only: the next call's start, almost always (memory)
            self._texts = {seq: texts}
        self._given = lists or {}
        if len(self._recent) > WINDOW:
            self._texts.pop(self._recent.pop(0)[0], None)


class RequestChains:
    """The writer's chains, one per session, for the :data:`CHAINS` sessions written to last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chains: OrderedDict[str, RequestChain] = OrderedDict()

    def get(self, session_id: str) -> RequestChain:
        with self._lock:
            chain = self._chains.get(session_id)
            if chain is None:
                chain = self._chains[session_id] = RequestChain()
                if len(self._chains) > CHAINS:
                    self._chains.popitem(last=False)
            else:
                self._chains.move_to_end(session_id)
            return chain

    def drop(self, session_id: str) -> None:
        """Let go of a session's chain (a session that is over): its next request is stored whole."""
        with self._lock:
            self._chains.pop(session_id, None)


def session_requests(bodies: Iterable[tuple[int, Any]], where: str) -> Iterator[tuple[int, Any]]:
    """Each llm event's request, whole, from one session's llm payloads (``(seq, parsed payload)``,
    every llm event of the session, in seq order); ``where`` names the session in errors.

    A request is kept only until the last delta that starts from it, so memory holds what is still
    needed, and a reconstructed request shares its unchanged values with the one it starts from."""
    rows = list(bodies)
    last_use: dict[int, int] = {}
    for i, (_, body) in enumerate(rows):
        delta = body.get(DELTA_KEY) if isinstance(body, dict) else None
        if isinstance(delta, dict) and type(delta.get("from")) is int:
            last_use[delta["from"]] = i
    held: dict[int, dict[str, Any]] = {}
    previous: int | None = None
    for i, (seq, body) in enumerate(rows):
        at = f"{where} seq {seq}"
        if previous is not None and seq <= previous:
            raise SchemaError(f"{at}: two llm events of the session have seq {seq}, or they are out of order")
        previous = seq
        delta = body.get(DELTA_KEY) if isinstance(body, dict) else None
        if delta is None:
            request = body.get("request") if isinstance(body, dict) else None
        else:
            if "request" in body:
                raise SchemaError(f"{at}: its payload holds both a request and a request_delta")
            start = delta.get("from") if isinstance(delta, dict) else None
            base = held.get(start) if type(start) is int else None
            if base is None or type(start) is not int:
                raise SchemaError(
                    f"{at}: its request starts from llm event {start!r}, which is not an earlier llm event "
                    "of the session with a request"
                )
            request = _apply(base, delta, at)
            if last_use.get(start) == i:
                del held[start]
        if seq in last_use and isinstance(request, dict):
            held[seq] = request
        yield seq, request


def with_requests(rows: Iterable[dict[str, Any]], where: str) -> Iterator[tuple[dict[str, Any], Any, Any]]:
    """``(row, payload, request)`` for each of ``rows``: llm events as dicts with ``session_id``,
    ``seq`` and ``payload`` (JSON text), and ``run_id`` when they hold several runs, every llm event
    of each session they hold, ordered by run, session and seq (``ORDER BY run_id, session_id, seq``).
    One session's rows are held at a time; ``where`` names the run in errors. A payload that is not a
    JSON object gives ``({}, None)``."""
    session: list[tuple[dict[str, Any], Any]] = []
    for row in rows:
        if session and (row["session_id"], row.get("run_id")) != (
            session[0][0]["session_id"],
            session[0][0].get("run_id"),
        ):
            yield from _one_session(session, where)
            session = []
        try:
            body = orjson.loads(row["payload"])
        except orjson.JSONDecodeError:
            body = {}
        session.append((row, body if isinstance(body, dict) else {}))
    if session:
        yield from _one_session(session, where)


def _one_session(rows: list[tuple[dict[str, Any], Any]], where: str) -> Iterator[tuple[dict[str, Any], Any, Any]]:
    run = rows[0][0].get("run_id")
    at = f"{f'run {run}' if run is not None else where} session {rows[0][0]['session_id']}"
    requests = session_requests(((row["seq"], body) for row, body in rows), at)
    for (row, body), (_, request) in zip(rows, requests, strict=True):
        yield row, body, request


def whole_payload(body: Any, request: Any) -> Any:
    """An llm payload with its request whole (what ``show --full`` and exports print)."""
    if not isinstance(body, dict) or DELTA_KEY not in body:
        return body
    out = {k: v for k, v in body.items() if k != DELTA_KEY}
    out["request"] = request
    return out
