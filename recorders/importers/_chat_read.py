"""Reading chat logs: the conversation objects of each file (a JSON array, JSON lines or one
object; or the list at the map's ``conversations`` path in each of those), each checked into a
:class:`Conversation`, and the trials of one session id ranked into ``ID``, ``ID#r1`` ... (see
:mod:`._chat`)."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.recorders.importers._chat_map import ChatMap, check_paths
from sdbctl.recorders.importers._chat_messages import Message, ResultRule, openai_messages, openai_tools
from sdbctl.recorders.importers._input import get_path, read_text
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import check_json, loads
from sdbctl.sdb.redaction import Redactor
from sdbctl.sdb.text import visible

# session ID#rK is repeat K of session ID (the project's convention, which the differ reads)
REPEATED = re.compile(r"^(.*)#r([0-9]+)$")


class _Bad(Exception):
    """One bad item (or a whole bad file), its place already in the message."""


@dataclass
class Conversation:
    """One conversation object, checked: where it was read, its session and trial, and its messages."""

    where: str
    session: str
    repeat: int | None
    outcome: float | None
    model: str | None
    tools: list[Any] | None
    messages: list[Message]


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    """(place, value) of each conversation object in ``path``: ``FILE:LINE`` for JSON lines,
    ``FILE[i]`` for an array element, ``FILE`` for one object. A line that is not JSON is yielded
    as a :class:`_Bad`; a file that is not text, or a broken pretty-printed document, raises it."""
    text = read_text(path, _Bad)
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not lines:
        return
    first = lines[0][1].strip()
    pretty = first == "{" or first.startswith("[")
    try:
        whole = loads(text, check=False)  # each conversation is checked on its own
    except json.JSONDecodeError as exc:
        if pretty:  # one pretty-printed document: its own error says where
            raise _Bad(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except PayloadError as exc:  # JSON, but not as it can be kept: one document says where it starts
        if pretty or len(lines) == 1:
            raise _Bad(f"{path}:{lines[0][0]}: {exc}") from None
    else:
        if isinstance(whole, list):
            for i, item in enumerate(whole):
                yield f"{path}[{i}]", item
        elif len(lines) == 1:
            yield f"{path}:{lines[0][0]}", whole
        else:
            yield str(path), whole
        return
    for number, line in lines:
        try:
            yield f"{path}:{number}", loads(line, check=False)
        except json.JSONDecodeError as exc:
            yield f"{path}:{number}", _Bad(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})")
        except PayloadError as exc:
            yield f"{path}:{number}", _Bad(f"{path}:{number}: {exc}")


def _unpack(where: str, obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(place, value) of each conversation in the list at ``path`` of a file's object ``obj``
    (``FILE: simulations[3]``); nothing there, or not a list, is a :class:`_Bad` naming the file and
    the path."""
    found = get_path(obj, path) if isinstance(obj, dict) else None
    if found is None:
        has = (
            "has the keys " + (", ".join(visible(str(k)) for k in list(obj)[:20]) or "(none)")
            if isinstance(obj, dict)
            else f"is a {type(obj).__name__}, not an object"
        )
        raise _Bad(f"{where}: no conversation list at conversations = {path!r}: the file's object {has}")
    if not isinstance(found, list):
        raise _Bad(f"{where}: conversations = {path!r} is a {type(found).__name__} there, not a list of conversations")
    for i, item in enumerate(found):
        yield f"{where}: {path}[{i}]", item


def _conversation(
    where: str, index: int, obj: Any, m: ChatMap, redactor: Redactor, file: dict[str, Any] | None = None
) -> Conversation:
    """The conversation object ``obj`` (the ``index``-th read; ``file`` the object of the file holding
    it, when the map names ``conversations``), checked; a ValueError says what is wrong and the caller
    adds where. The session id and the model are redacted here, before any event."""
    if not isinstance(obj, dict):
        raise ValueError(f"a conversation must be a JSON object, not {type(obj).__name__}")
    try:
        check_json(obj)
    except PayloadError as exc:
        raise ValueError(str(exc).replace("payload", "the conversation", 1)) from None
    raw = get_path(obj, m.messages)
    if not isinstance(raw, list):
        got = "nothing" if raw is None else f"a {type(raw).__name__}"
        raise ValueError(f"no messages list at {m.messages!r} (found {got})")
    if not raw:
        raise ValueError(f"the messages list at {m.messages!r} is empty")
    messages = openai_messages(raw, m.messages, ResultRule(m.effect_error, m.tool_error))
    sid: Any = get_path(obj, m.session) if m.session else None
    if sid is None:
        sid = f"conv-{index}"
    elif isinstance(sid, int) and not isinstance(sid, bool):
        sid = str(sid)
    elif not isinstance(sid, str) or not sid.strip():
        raise ValueError(f"the session id at {m.session!r} must be a non-empty string or an integer, not {sid!r}")
    repeat = get_path(obj, m.repeat) if m.repeat else None
    if repeat is not None and (not isinstance(repeat, int) or isinstance(repeat, bool)):
        raise ValueError(f"the repeat at {m.repeat!r} must be an integer, not {repeat!r}")
    outcome = get_path(obj, m.outcome) if m.outcome else None
    if outcome is not None:
        if isinstance(outcome, bool):
            outcome = 1.0 if outcome else 0.0
        elif not isinstance(outcome, int | float) or not math.isfinite(outcome) or not 0 <= outcome <= 1:
            raise ValueError(f"the outcome at {m.outcome!r} must be a boolean or a number in [0, 1], not {outcome!r}")
        outcome = float(outcome)
    model = get_path(obj, m.model) if m.model else None
    if model is None and isinstance(obj.get("model"), str):
        model = obj["model"]
    if model is None and m.model and file is not None:
        model = get_path(file, m.model)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValueError(f"the model at {m.model!r} must be a non-empty string, not {model!r}")
    return Conversation(
        where=where,
        session=redactor.text(sid),
        repeat=repeat,
        outcome=outcome,
        model=redactor.text(model) if model is not None else None,
        tools=_tools(obj, file, m.tools),
        messages=messages,
    )


def _tools(obj: dict[str, Any], file: dict[str, Any] | None, path: str | None) -> list[Any] | None:
    """The tool definitions at ``path`` in the conversation, else in its file's object; OpenAI-shaped."""
    if path is None:
        return None
    value = get_path(obj, path)
    if value is None and file is not None:
        value = get_path(file, path)
    return openai_tools(value, path)


def read_conversations(
    paths: list[Path], m: ChatMap, redactor: Redactor, *, skip_bad: bool = False
) -> tuple[list[Conversation], int, str | None]:
    """Every conversation of ``paths``, checked, in input order; how many bad items were skipped; and
    the note of the default paths found (:func:`check_paths`). The first bad item raises a one-line
    :class:`SdbError` unless ``skip_bad``; a path of the map that matches nothing anywhere always does,
    before any single conversation is judged by it."""
    read: list[tuple[str, int, Any, Any]] = []  # (where, index, conversation, its file's object)
    bad = 0
    index = itertools.count()
    for path in paths:
        try:
            for where, obj in _documents(path):
                if m.conversations is None or isinstance(obj, _Bad):
                    read.append((where, next(index), obj, None))
                    continue
                try:
                    read += [(at, next(index), item, obj) for at, item in _unpack(where, obj, m.conversations)]
                except _Bad as exc:  # the file's object holds no list there: one bad item
                    read.append((where, next(index), exc, None))
        except _Bad as exc:  # the whole file: not text, or a broken pretty-printed document
            if not skip_bad:
                raise SdbError(str(exc)) from None
            bad += 1
    note = check_paths(m, [(where, obj, file) for where, _, obj, file in read if isinstance(obj, dict)])
    conversations: list[Conversation] = []
    for where, n, obj, file in read:
        try:
            if isinstance(obj, _Bad):
                raise obj
            conversations.append(_conversation(where, n, obj, m, redactor, file))
        except (_Bad, ValueError) as exc:
            if not skip_bad:
                raise SdbError(str(exc) if isinstance(exc, _Bad) else f"{where}: {exc}") from None
            bad += 1
    _check_tool_error(m, conversations)
    return conversations, bad, note


def _check_tool_error(m: ChatMap, conversations: list[Conversation]) -> None:
    """A ``tool_error`` path that no tool result has (while there are some) is a map error, as any path
    a map names that matches nothing: it would mark no failure."""
    results = [item for conv in conversations for item in conv.messages if item.status is not None]
    if m.tool_error and results and all(item.flagged is None for item in results):
        raise SdbError(
            f'{m.source}: tool_error = "{visible(m.tool_error)}" matches nothing in any of the {len(results)} '
            "tool results: name the key of a tool result that marks it failed"
        )


def _own_ids(conversations: list[Conversation], skip_bad: bool) -> tuple[list[Conversation], int]:
    """``conversations`` less those whose id reads as a trial of another session id of the import
    (``x#r1`` beside ``x``: the differ would merge them into trials of one session), and how many;
    without ``skip_bad`` the first is an error naming both places."""
    first: dict[str, Conversation] = {}
    for conv in conversations:
        first.setdefault(conv.session, conv)
    out: list[Conversation] = []
    for conv in conversations:
        found = REPEATED.match(conv.session)
        other = first.get(found.group(1)) if found else None
        if found is None or other is None:
            out.append(conv)
        elif not skip_bad:
            raise SdbError(
                f"{conv.where}: session {conv.session!r} reads as trial {found.group(2)} of session "
                f"{other.session!r} at {other.where}, and would be merged with it: give it another id, "
                f"or number the trials of {other.session!r} with `repeat`"
            )
    return out, len(conversations) - len(out)


def ranked_sessions(
    conversations: list[Conversation], skip_bad: bool
) -> tuple[list[tuple[str, Conversation]], int, int]:
    """(session id, conversation) in input order with repeats ranked (``ID``, ``ID#r1`` ...), the
    largest number of trials of a session, and how many duplicates (or ids read as another's trials)
    were skipped."""
    first: dict[tuple[str, int], Conversation] = {}
    kept: list[Conversation] = []
    conversations, skipped = _own_ids(conversations, skip_bad)
    for conv in conversations:
        key = (conv.session, conv.repeat or 0)
        if key in first:
            if skip_bad:
                skipped += 1
                continue
            same = (
                f"with the same repeat {conv.repeat}"
                if conv.repeat is not None
                else "with no repeat value: give each conversation its own id, or map `repeat` to the trial number"
            )
            raise SdbError(f"{conv.where}: session {conv.session!r} is also at {first[key].where}, {same}")
        first[key] = conv
        kept.append(conv)
    trials: dict[str, list[int]] = {}
    for session, rep in first:
        trials.setdefault(session, []).append(rep)
    rank = {(s, r): k for s, reps in trials.items() for k, r in enumerate(sorted(reps))}
    named = []
    for conv in kept:
        k = rank[(conv.session, conv.repeat or 0)]
        named.append((conv.session if k == 0 else f"{conv.session}#r{k}", conv))
    return named, max((len(r) for r in trials.values()), default=1), skipped
