"""``sdbctl import jsonl FILE --map MAP.toml``: any JSON-lines log as a run.

The map names the JSON field (a dotted path) of each column and maps the log's own kind values onto
sdbctl's::

    session = "trace_id"     # required
    order = "seq"            # required: a number or an ISO-8601 timestamp
    kind = "type"            # required
    name = "tool"
    args = "arguments"       # an object, or a JSON string holding one
    step = "step"
    model = "model"
    timestamp = "ts"
    request = "request"      # llm events: the request, so that step mode can ask it again
    response = "response"    # llm events: the answer
    [kinds]                  # log value -> event kind; unmapped kinds are an error unless other = "skip"
    tool_call = "action"
    llm_call = "llm"

All or nothing: every line is read and checked before anything is written, and the first bad line
is a one-line ``FILE:LINE: what is wrong`` (``skip_bad`` imports the rest and counts what it
skipped). A line is JSON that canonical JSON keeps as it is (:func:`sdb.events.loads`):
nesting too deep, NaN or an infinity, a key twice, an integer outside 64 bits or a lone surrogate make
it a bad line, as does a time outside what a timestamp holds. An action is linked (``parent``) to the
latest llm event before it in its session, so the differ compares it as a model action.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.recorders.importers._input import get_path, read_map
from sdbctl.recorders.importers._summary import ImportSummary
from sdbctl.sdb.boundary import Boundary, load_actions_setting, write_actions
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import COLUMNS, KINDS, RequestChain, batch_from_columns, canonical_bytes, digest, loads
from sdbctl.sdb.recording import new_run_id
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.store import RunWriter, Store, check_run_id

FIELDS = ("session", "order", "kind", "name", "args", "step", "model", "timestamp", "request", "response")
REQUIRED = ("session", "order", "kind")


@dataclass(frozen=True)
class LogMap:
    fields: dict[str, str]
    kinds: dict[str, str]
    skip_other: bool


def load_map(path: Path) -> LogMap:
    """Read and check a map file."""
    data = read_map(path)
    kinds = data.pop("kinds", {})
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise SdbError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (keys: {', '.join(FIELDS)}, [kinds])")
    missing = [k for k in REQUIRED if not isinstance(data.get(k), str)]
    if missing:
        raise SdbError(f"{path}: the map needs {', '.join(missing)} (the JSON field of each)")
    if not isinstance(kinds, Mapping) or not kinds:
        raise SdbError(f"{path}: a [kinds] table maps the log's kind values onto {', '.join(KINDS)}")
    skip = kinds.get("other") == "skip"
    mapped = {str(k): str(v) for k, v in kinds.items() if k != "other"}
    bad = sorted({v for v in mapped.values() if v not in KINDS})
    if bad:
        raise SdbError(f"{path}: [kinds] maps onto {', '.join(bad)}; event kinds are {', '.join(KINDS)}")
    return LogMap({k: str(v) for k, v in data.items()}, mapped, skip)


def _order(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise ValueError(f"order value {value!r} is neither a number nor an ISO-8601 timestamp")


_TS_LIMIT_US = 2**63 - 1  # the event timestamp column: int64 microseconds since 1970


def _ts_us(value: Any, fallback: float) -> int:
    """Microseconds since 1970 of a timestamp field (``fallback`` seconds when it has none or none
    that reads); a time beyond what the timestamp column holds is a ValueError."""
    try:
        seconds = _order(value) if value is not None else fallback
    except ValueError:
        seconds = fallback
    us = seconds * 1_000_000
    if not -_TS_LIMIT_US <= us <= _TS_LIMIT_US:
        raise ValueError(f"time {seconds:g} s since 1970 is out of the range of a timestamp")
    return int(us)


def _parse(path: Path, m: LogMap, skip_bad: bool) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    skipped = 0
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SdbError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SdbError(f"{path}: not a text file (not UTF-8)") from None
    f = m.fields
    now = time.time()  # the timestamp of events whose log has none (and orders by a counter)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"a line must hold a JSON object, not {type(obj).__name__}")
            session = get_path(obj, f["session"])
            if session is None or isinstance(session, dict | list):
                raise ValueError(f"no session id in field {f['session']!r}")
            raw_kind = get_path(obj, f["kind"])
            kind = m.kinds.get(str(raw_kind))
            if kind is None:
                if m.skip_other:
                    continue
                raise ValueError(f'kind {raw_kind!r} is not mapped in [kinds] (add it, or other = "skip")')
            order = _order(get_path(obj, f["order"]))
            args = get_path(obj, f["args"]) if "args" in f else None
            if isinstance(args, str):
                args = loads(args)
            if args is not None and not isinstance(args, dict):
                raise ValueError(f"arguments in field {f['args']!r} are not an object")
            name = get_path(obj, f["name"]) if "name" in f else None
            step = get_path(obj, f["step"]) if "step" in f else None
            model = get_path(obj, f["model"]) if "model" in f else None
            request = get_path(obj, f["request"]) if "request" in f else None
            if kind == "llm" and request is not None and not isinstance(request, dict):
                raise ValueError(f"the request at {f['request']!r} is a {type(request).__name__}, not an object")
            records.append(
                {
                    "session": str(session),
                    "order": order,
                    "line": number,
                    "kind": kind,
                    "name": str(name) if name is not None else str(raw_kind),
                    "args": args or {},
                    "step": str(step) if step is not None else None,
                    "model": str(model) if model is not None else None,
                    "ts": _ts_us(
                        get_path(obj, f["timestamp"]) if "timestamp" in f else None, order if order > 1e8 else now
                    ),
                    "request": request,
                    "response": get_path(obj, f["response"]) if "response" in f else None,
                }
            )
        except (ValueError, TypeError, PayloadError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            if not skip_bad:
                raise SdbError(f"{path}:{number}: {reason}") from None
            skipped += 1
    return records, skipped


def _acted(records: list[dict[str, Any]]) -> set[int]:
    """The indexes of the llm records followed by an action record of their own (one of the same session
    before its next llm record): the others' actions are read from their answers."""
    acted: set[int] = set()
    last: int | None = None
    session = None
    for index, r in enumerate(records):
        if r["session"] != session:
            last, session = None, r["session"]
        if r["kind"] == "llm":
            last = index
        elif r["kind"] == "action" and last is not None:
            acted.add(last)
    return acted


def import_jsonl(
    store: str | Path | None, path: Path, map_path: Path, *, run_id: str | None = None, skip_bad: bool = False
) -> ImportSummary:
    """Import ``path`` with ``map_path`` into a new run; nothing is written unless every line is good
    (or ``skip_bad``)."""
    m = load_map(map_path)
    redactor = load_redactor()
    records, skipped = _parse(path, m, skip_bad)
    if not records:
        raise SdbError(f"{path}: no event to import")
    records.sort(key=lambda r: (r["session"], r["order"], r["line"]))
    acted = _acted(records)
    boundary = Boundary("jsonl", open_vocabulary=True)
    text_actions = load_actions_setting().text_actions
    columns: list[list[Any]] = [[] for _ in COLUMNS]
    seqs: dict[str, int] = {}
    last_llm: dict[str, int] = {}
    chain = RequestChain()  # the session's requests, stored as what is new (sdb.events._linear)
    rid = check_run_id(run_id) if run_id else new_run_id()

    def add(r: dict[str, Any], kind: str, name: str, parent: int | None, body: bytes, det: bytes, status: str) -> int:
        seq = seqs.get(r["session"], 0)
        seqs[r["session"]] = seq + 1
        row = {
            "run_id": rid,
            "session_id": r["session"],
            "seq": seq,
            "step": r["step"],
            "parent": parent,
            "ts": r["ts"],
            "kind": kind,
            "actor": "agent",
            "pattern": "",
            "name": name,
            "model": r["model"] if kind == "llm" else None,
            "prompt": None,
            "payload": body.decode(),
            "digest": digest(name, det),
            "status": status,
            "latency_ms": None,
            "tokens_in": None,
            "tokens_out": None,
            "replay": None,  # an import is no replay
        }
        for i, column in enumerate(COLUMNS):
            columns[i].append(row[column])
        return seq

    def derived(r: dict[str, Any], name: str, args: Any, *, parent: int, status: str = "ok", **more: Any) -> int:
        """An action read from an llm record's answer (the boundary's sink), as a recorder writes it."""
        held = {"args": args, **{k: more[k] for k in ("call_id", "error") if more.get(k) is not None}}
        return add(r, "action", name, parent, canonical_bytes(held), canonical_bytes(args), status)

    for index, r in enumerate(records):
        if r["session"] not in seqs:  # records are by session: a new one starts its chain
            chain = RequestChain()
        kind, name = r["kind"], r["name"]
        r["args"] = redactor.redact(r["args"])
        if kind == "llm":
            request, response = redactor.redact(r["request"] or {}), redactor.redact(r["response"] or {})
            member, det, state = chain.encode(request)
            seq = add(
                r, kind, name, None, b"{" + member + b',"response":' + canonical_bytes(response) + b"}", det, "ok"
            )
            chain.keep(seq, state)
            last_llm[r["session"]] = seq
            if index not in acted and response:  # no action line of its own: the answer's, as a replay reads it
                write_actions(functools.partial(derived, r), boundary, response, seq, {}, text_actions=text_actions)
        elif kind == "action":
            add(r, kind, name, last_llm.get(r["session"]), canonical_bytes({"args": r["args"]}),
                canonical_bytes(r["args"]), "ok")  # fmt: skip
        else:
            add(r, kind, name, None, canonical_bytes(r["args"]), canonical_bytes(r["args"]),
                "error" if kind == "error" else "ok")  # fmt: skip
    writer = RunWriter.create(
        Store.open(store, must_exist=False),
        rid,
        recorder="jsonl",
        mode="record",
        meta={"imported_from": str(path), "map": str(map_path), "skipped": skipped, "redaction": redactor.names},
    )
    try:
        writer.write(batch_from_columns(columns))
        writer.close("complete")
    except BaseException:
        with contextlib.suppress(OSError, SdbError):
            writer.close("partial")  # the lock released first, then the run removed
        writer.store.delete_run(rid)  # all or nothing, as the other importers
        raise
    return ImportSummary(rid, len(records), len(seqs), skipped)
