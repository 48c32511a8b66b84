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

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import orjson

from sdbctl.sdb.errors import SchemaError
from sdbctl.sdb.events._canonical import canonical_bytes, plain_json

DELTA_KEY: Final = "request_delta"
WINDOW: Final = 4  # the earlier calls of a session a delta may start from (agents of one session take turns)
CHAINS: Final = 4096  # the sessions a writer keeps its last requests for (an older one stores its next request whole)


def _equal(a: Any, b: Any) -> bool:
    """``a == b``, False where a comparison has no truth value (a numpy array) or fails."""
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return False


def _extend_from(base: list[Any], items: list[Any]) -> int:
    """How many leading items of ``base`` begin ``items`` (compared as values; the writer checks the
    result byte for byte, so a ``True`` taken for a ``1`` costs a whole request, never a wrong one)."""
    n = len(base)
    if len(items) >= n and _equal(items[:n], base):
        return n
    k, limit = 0, min(n, len(items))
    while k < limit and _equal(items[k], base[k]):
        k += 1
    return k


def _delta(base: Mapping[str, Any], request: Mapping[str, Any]) -> tuple[dict[str, Any], int, bool]:
    """The delta of ``request`` from ``base`` (without its ``from``), how many values and list items
    it takes from ``base`` (the larger, the better the start), and whether it takes all of them."""
    whole = len(base) <= len(request)
    same: list[str] = []
    extend: dict[str, list[Any]] = {}
    values: dict[str, Any] = {}
    kept = 0
    for key, value in request.items():
        if type(key) is not str or key not in base:
            values[key] = value
            continue
        old = base[key]
        if isinstance(value, list | tuple) and type(old) is list:
            n = _extend_from(old, list(value))
            if n == len(old) == len(value):
                same.append(key)
            elif n:
                extend[key] = [n, list(value[n:])]
            else:
                values[key] = value
            kept += n
            whole = whole and n == len(old)
        elif _equal(old, value):
            same.append(key)
            kept += 1
        else:
            values[key] = value
            whole = False
    delta: dict[str, Any] = {}
    if same:
        delta["same"] = sorted(same)
    if extend:
        delta["extend"] = extend
    if values:
        delta["set"] = values
    return delta, kept, whole


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

    __slots__ = ("_recent", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (seq, request as read back, the thread whose unit() still holds its event, else None), oldest first
        self._recent: list[tuple[int, dict[str, Any], int | None]] = []

    def encode(self, request: Any) -> tuple[bytes, bytes, dict[str, Any] | None]:
        """``(member, whole, state)``: the payload member for ``request`` (``"request":...`` or, when it
        shares values with one of the session's last requests, ``"request_delta":...``), the canonical
        JSON of the whole request (its digest's), and what to :meth:`keep` once the event has its seq.
        Raises :class:`PayloadError` for a request that is not JSON as it is. Call with :attr:`lock`
        held.

        A delta is kept only when the request read back from it (:func:`_apply`) is written as the
        request given, byte for byte; else the request is stored whole. The request read back is
        made of values parsed from canonical JSON, so orjson writes it as canonical JSON, and equal
        texts make the request's canonical JSON too (a ``True`` taken for a ``1``, an integral float
        or a NaN makes them differ). So a long conversation costs two serialisations per call, in C,
        not a walk of its history."""
        if isinstance(request, Mapping) and self._recent:
            best: tuple[int, int, dict[str, Any], dict[str, Any]] | None = None
            me = threading.get_ident()
            for base_seq, base, owner in reversed(self._recent):  # the newest first
                if owner is not None and owner != me:  # held in another thread's unit(): maybe not queued yet
                    continue
                delta, kept, complete = _delta(base, request)
                if kept and (best is None or kept > best[0]):
                    best = (kept, base_seq, base, delta)
                if complete:  # it extends all of that one: an older one cannot hold more
                    break
            if best is not None:
                _, base_seq, base, delta = best
                delta["from"] = base_seq
                encoded = canonical_bytes(delta)  # the new values checked here
                state = _apply(base, orjson.loads(encoded), "request")
                whole = plain_json(request)
                if whole is not None and whole == plain_json(state):
                    return b'"request_delta":' + encoded, whole, state
        whole = canonical_bytes(request)
        return b'"request":' + whole, whole, orjson.loads(whole) if isinstance(request, Mapping) else None

    def keep(self, seq: int, state: dict[str, Any] | None, *, shared: bool = True) -> None:
        """Remember the request of llm event ``seq`` (``state`` from :meth:`encode`) for the next ones;
        not ``shared``: its event is held in this thread's unit() block, so only this thread's next
        events (queued after it) may start from it."""
        if state is None:
            return
        self._recent.append((seq, state, None if shared else threading.get_ident()))
        if len(self._recent) > WINDOW:
            del self._recent[0]

    def forget(self, seq: int) -> None:
        """Drop the request of ``seq``, an event that was not queued after all."""
        self._recent = [entry for entry in self._recent if entry[0] != seq]


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
