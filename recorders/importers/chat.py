"""``sdbctl import chat FILE...`` and ``sdbctl export RUN --format chat``: OpenAI chat-format
conversations (the ``messages`` lists that eval harnesses and agent frameworks log) as a run, and back.

**Input.** A file holds a JSON array of conversation objects, JSON lines of them, or one object (also
pretty-printed). Several files make one run. An optional TOML map names, as dotted paths into each
conversation object, where things are; every key is optional::

    messages = "traj"          # the messages list (default "messages")
    session = "task_id"        # the session id (default "id")
    repeat = "trial"           # the trial number of the session (default "repeat")
    outcome = "reward"         # success or reward: a number in [0, 1] or a boolean (default "outcome")
    model = "info.model"       # the model (default "model")
    effect_error = "^Error"    # a regular expression: a tool result whose text matches it failed

The defaults are the keys :func:`export_chat` writes, so an exported file imports back with no map.
A key set to ``""`` is not read at all (``outcome = ""`` ignores an ``outcome`` field that means
something else). A conversation with no session id at its path is ``conv-N``, N its 0-based position
among all the conversation objects read, across the files in the order given (bad ones counted, so
ids do not move under ``--skip-bad``); a session id that is an integer is written as text.

**Events**, per conversation, through :class:`recorders.conversation.ConversationRecorder`, exactly
as the recording proxy writes live traffic:

- each ``assistant`` message is one call: an ``llm`` event (step ``call-NNN``, name ``chat``, model
  ``openai:MODEL``, or ``chat`` when no model is known) whose request is ``{"messages": <the messages
  before it>}`` (+ ``model``, + ``tools`` when the object carries a ``tools`` list) and whose
  response is ``{"choices": [{"index": 0, "message": <the message>, "finish_reason": ...}]}``; then
  its actions (``sdb.boundary.observe.write_actions``): one per tool call, or ``message {"content":
  TEXT}`` for a text answer. Tool-call arguments that are a JSON string are kept as the model wrote
  them: a string that is not JSON is the model's parse failure (action ``?``, status
  ``parse_failed``), as the OpenTelemetry importer records it;
- each ``tool`` message is an ``effect`` of its call (``{"call_id", "content"}``), status ``error``
  when ``effect_error`` matches its text or it carries ``"is_error": true`` (what the chat export
  writes for a failed call), else ``ok``. Ids are reused in real logs: a result answers the earliest
  unanswered call with its id; a result whose id matches no call is an effect named ``?``;
- Anthropic content blocks are read too: ``tool_use`` blocks of an assistant message are its tool
  calls (normalised to OpenAI ``tool_calls``, arguments as a JSON string, text blocks joined as the
  content, other blocks such as ``thinking`` dropped), and each ``tool_result`` block of a user
  message is a tool message (status ``error`` when ``is_error``); Anthropic tool definitions
  (``input_schema``) become OpenAI ones. Requests hold the normalised, OpenAI-shaped messages;
- the outcome, when there is one: a ``state`` event named ``outcome`` with payload ``{"value": V}``,
  V a float in [0, 1] (a boolean is 1.0 / 0.0), after the conversation's messages.

**Repeats.** The trials of one session id are ranked by their repeat value (a missing value counts
as 0): the lowest keeps the plain id, the next is ``ID#r1``, then ``ID#r2`` ... (the project's
convention for repeat K of a session), and the manifest's ``repeat`` is the largest number of trials
of any session (1 without repeats). Two conversations with the same session id and the same repeat
value (or none) are an error naming both places: numbering them silently would pair trials of
different tasks when the id field is wrong; map ``repeat`` to the field that numbers the trials.

**Bad input** is all or nothing: every file is read and checked before anything is written, and the
first bad item is one line ``FILE:LINE: what is wrong`` (JSON lines), ``FILE[i]: ...`` (an element
of an array) or ``FILE: ...`` (one object); ``skip_bad`` imports the rest and counts what it
skipped (a duplicate is skipped after the first). Events carry no wall-clock time in these logs:
their ``ts`` is 1970-01-01 plus one millisecond per event in import order, so the same files always
import to the same events. Everything written is redacted (``[tool.sdbctl.redact]``), session ids
and model names included.

**Export.** :func:`export_chat` turns every session of a run into one conversation ``{"id",
"messages"}`` (+ ``outcome``, ``model``, ``tools``, and ``repeat`` K for a session ``ID#rK``, whose
``id`` is then the plain ID): the messages of the session's last llm request, its answer, then a tool
message for each effect recorded after it; a tool message whose effect failed carries ``"is_error":
true``. A session whose calls do not all extend one history (several agents in one session) exports
its last conversation only, and is counted in :attr:`ChatExport.partial`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sdbctl.recorders.conversation import ConversationRecorder
from sdbctl.recorders.importers import ImportSummary, get_path, read_map, read_text
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events.canonical import canonical_bytes, json_or_text, loads
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import Redactor, load_redactor
from sdbctl.sdb.store.layout import Store
from sdbctl.sdb.store.read import event_dicts, run_events

PATHS = ("messages", "session", "repeat", "outcome", "model")
KEYS = (*PATHS, "effect_error")
DEFAULTS: dict[str, str] = {
    "messages": "messages",
    "session": "id",
    "repeat": "repeat",
    "outcome": "outcome",
    "model": "model",
}
_REPEATED = re.compile(r"^(.*)#r([0-9]+)$")
_TICK_NS = 1_000_000  # one millisecond per event


@dataclass(frozen=True)
class ChatMap:
    """Where each field is in a conversation object (dotted paths; None: not read), and the regular
    expression of a failed tool result."""

    messages: str = "messages"
    session: str | None = "id"
    repeat: str | None = "repeat"
    outcome: str | None = "outcome"
    model: str | None = "model"
    effect_error: re.Pattern[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in PATHS}
        out["effect_error"] = self.effect_error.pattern if self.effect_error is not None else None
        return out


def load_chat_map(path: Path | None) -> ChatMap:
    """The map in ``path`` (the defaults when None); a bad one is one line naming the file."""
    if path is None:
        return ChatMap()
    data = read_map(path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise SdbError(f"{path}: unknown map key(s) {', '.join(unknown)} (keys: {', '.join(KEYS)})")
    wrong = [k for k, v in data.items() if not isinstance(v, str)]
    if wrong:
        raise SdbError(f"{path}: {wrong[0]} must be a string (a dotted path, or a regular expression for effect_error)")
    fields: dict[str, str | None] = {k: data.get(k, DEFAULTS[k]) or None for k in PATHS}
    messages = fields.pop("messages")
    if messages is None:
        raise SdbError(f"{path}: messages cannot be empty (it names the messages list)")
    pattern: re.Pattern[str] | None = None
    if data.get("effect_error"):
        try:
            pattern = re.compile(data["effect_error"])
        except re.error as exc:
            raise SdbError(
                f"{path}: effect_error {data['effect_error']!r} is not a valid regular expression ({exc})"
            ) from None
    return ChatMap(messages=messages, effect_error=pattern, **fields)


# -- reading ---------------------------------------------------------------------------------------


class _Bad(Exception):
    """One bad item (or a whole bad file), its place already in the message."""


@dataclass
class _Message:
    message: dict[str, Any]  # OpenAI-shaped, as the requests hold it
    status: str | None = None  # a tool message: ok / error
    finish: str | None = None  # an assistant message: its finish reason


@dataclass
class _Conversation:
    where: str
    session: str
    repeat: int | None
    outcome: float | None
    model: str | None
    tools: list[Any] | None
    messages: list[_Message]


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


def _text(content: Any) -> str:
    """The text of a message content: a string; text parts or blocks joined; anything else as JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, Mapping) for p in content):
        texts = [p["text"] for p in content if isinstance(p.get("text"), str)]
        if texts or not content:
            return "".join(texts)
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def _arguments(value: Any, where: str, name: str) -> str:
    """Tool-call arguments as the JSON string OpenAI carries: an object is serialised; a string is kept
    as the model wrote it (the boundary records a parse failure when it is not JSON)."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        try:  # the boundary reads them as JSON: JSON it could not keep as it is is refused here
            loads(value)
        except PayloadError as exc:
            raise ValueError(f"{where}: arguments of {name!r}: {exc}") from None
        except json.JSONDecodeError:
            pass  # not JSON: the model's parse failure, recorded as such
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise ValueError(
        f"{where}: arguments of {name!r} are a {type(value).__name__}, neither an object nor a JSON string"
    )


def _call_id(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{where}: the call id must be a string, not {type(value).__name__}")


def _tool_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: a tool call with no function name")
    return value


def _openai_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        raise ValueError(f"{where}: a tool call must be an object, not {type(call).__name__}")
    fn = call.get("function")
    name = _tool_name(fn.get("name") if isinstance(fn, Mapping) else None, where)
    args = _arguments(fn.get("arguments") if isinstance(fn, Mapping) else None, where, name)
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
    call_id = _call_id(call.get("id"), where)
    if call_id is not None:
        out = {"id": call_id, **out}
    return out


def _tool_use(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    name = _tool_name(block.get("name"), where)
    call = {"id": block.get("id"), "function": {"name": name, "arguments": block.get("input")}}
    return _openai_call(call, where)


def _assistant(message: Mapping[str, Any], where: str) -> _Message:
    out = {k: v for k, v in message.items() if k != "finish_reason"}
    calls: list[dict[str, Any]] = []
    raw = message.get("tool_calls")
    if raw is not None:
        if not isinstance(raw, list):
            raise ValueError(f"{where}.tool_calls must be a list, not {type(raw).__name__}")
        calls += [_openai_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw)]
    content = message.get("content")
    if isinstance(content, list):  # content parts, or Anthropic blocks
        texts: list[str] = []
        for j, block in enumerate(content):
            if not isinstance(block, Mapping):
                raise ValueError(f"{where}.content[{j}] must be an object, not {type(block).__name__}")
            if block.get("type") == "tool_use":
                calls.append(_tool_use(block, f"{where}.content[{j}]"))
            elif block.get("type") in (None, "text", "output_text") and isinstance(block.get("text"), str):
                texts.append(block["text"])
        out["content"] = "".join(texts) if texts else None
    elif content is not None and not isinstance(content, str):
        raise ValueError(f"{where}.content must be text or a list of content blocks, not {type(content).__name__}")
    out.pop("tool_calls", None)  # an empty list is not valid OpenAI: no key at all
    if calls:
        out["tool_calls"] = calls
    finish = message.get("finish_reason")
    reason = finish if isinstance(finish, str) and finish else ("tool_calls" if calls else "stop")
    return _Message(out, finish=reason)


def _status(text: str, is_error: Any, pattern: re.Pattern[str] | None) -> str:
    return "error" if is_error is True or (pattern is not None and pattern.search(text)) else "ok"


def _tool(message: Mapping[str, Any], where: str, pattern: re.Pattern[str] | None) -> _Message:
    call_id = _call_id(message.get("tool_call_id"), f"{where}.tool_call_id")
    text = _text(message.get("content"))
    out = {k: v for k, v in message.items() if k != "is_error"}
    out["content"] = text
    if call_id is None:
        out.pop("tool_call_id", None)
    return _Message(out, status=_status(text, message.get("is_error"), pattern))


def _user(message: Mapping[str, Any], where: str, pattern: re.Pattern[str] | None) -> list[_Message]:
    """A user message; Anthropic ``tool_result`` blocks in it are tool messages (then the rest)."""
    content = message.get("content")
    if not isinstance(content, list) or not any(
        isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content
    ):
        return [_Message(dict(message))]
    out: list[_Message] = []
    rest: list[Any] = []
    for j, block in enumerate(content):
        if not isinstance(block, Mapping) or block.get("type") != "tool_result":
            rest.append(block)
            continue
        call_id = _call_id(block.get("tool_use_id"), f"{where}.content[{j}].tool_use_id")
        text = _text(block.get("content"))
        tool: dict[str, Any] = {"role": "tool", "content": text}
        if call_id is not None:
            tool = {"role": "tool", "tool_call_id": call_id, "content": text}
        out.append(_Message(tool, status=_status(text, block.get("is_error"), pattern)))
    if rest:
        out.append(_Message({**message, "content": rest}))
    return out


def _messages(raw: list[Any], where: str, pattern: re.Pattern[str] | None) -> list[_Message]:
    out: list[_Message] = []
    for i, message in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(message, Mapping):
            raise ValueError(f"{at}: a message must be an object, not {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str) or not role.strip():
            raise ValueError(f"{at}: a message with no role")
        if role == "assistant":
            out.append(_assistant(message, at))
        elif role in ("tool", "function"):
            out.append(_tool(message, at, pattern))
        elif role == "user":
            out += _user(message, at, pattern)
        else:
            out.append(_Message(dict(message)))
    return out


def _tools(value: Any) -> list[Any] | None:
    """The object's tool definitions, OpenAI-shaped (Anthropic ``input_schema`` ones converted)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise ValueError("tools must be a list of tool definitions (objects)")
    out: list[Any] = []
    for tool in value:
        if "input_schema" in tool and "function" not in tool:
            fn = {"name": tool.get("name"), "parameters": tool.get("input_schema")}
            if tool.get("description") is not None:
                fn["description"] = tool["description"]
            out.append({"type": "function", "function": fn})
        else:
            out.append(dict(tool))
    return out


def _conversation(where: str, index: int, obj: Any, m: ChatMap, redactor: Redactor) -> _Conversation:
    if not isinstance(obj, dict):
        raise ValueError(f"a conversation must be a JSON object, not {type(obj).__name__}")
    try:
        canonical_bytes(obj)
    except PayloadError as exc:
        raise ValueError(str(exc).replace("payload", "the conversation", 1)) from None
    raw = get_path(obj, m.messages)
    if not isinstance(raw, list):
        got = "nothing" if raw is None else f"a {type(raw).__name__}"
        raise ValueError(f"no messages list at {m.messages!r} (found {got})")
    if not raw:
        raise ValueError(f"the messages list at {m.messages!r} is empty")
    messages = _messages(raw, m.messages, m.effect_error)
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
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValueError(f"the model at {m.model!r} must be a non-empty string, not {model!r}")
    return _Conversation(
        where=where,
        session=redactor.text(sid),
        repeat=repeat,
        outcome=outcome,
        model=redactor.text(model) if model is not None else None,
        tools=_tools(obj.get("tools")),
        messages=messages,
    )


def read_conversations(
    paths: list[Path], m: ChatMap, redactor: Redactor, *, skip_bad: bool = False
) -> tuple[list[_Conversation], int]:
    """Every conversation of ``paths``, checked, in input order, and how many bad items were skipped;
    the first bad item raises a one-line :class:`SdbError` unless ``skip_bad``."""
    conversations: list[_Conversation] = []
    bad = 0
    index = itertools.count()
    for path in paths:
        try:
            for where, obj in _documents(path):
                n = next(index)
                try:
                    if isinstance(obj, _Bad):
                        raise obj
                    conversations.append(_conversation(where, n, obj, m, redactor))
                except (_Bad, ValueError) as exc:
                    if not skip_bad:
                        raise SdbError(str(exc) if isinstance(exc, _Bad) else f"{where}: {exc}") from None
                    bad += 1
        except _Bad as exc:  # the whole file: not text, or a broken pretty-printed document
            if not skip_bad:
                raise SdbError(str(exc)) from None
            bad += 1
    return conversations, bad


def _sessions(conversations: list[_Conversation], skip_bad: bool) -> tuple[list[tuple[str, _Conversation]], int, int]:
    """(session id, conversation) in input order with repeats ranked (``ID``, ``ID#r1`` ...), the
    largest number of trials of a session, and how many duplicates were skipped."""
    first: dict[tuple[str, int], _Conversation] = {}
    kept: list[_Conversation] = []
    skipped = 0
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


# -- writing ---------------------------------------------------------------------------------------


def _write(conversations: ConversationRecorder, session: str, conv: _Conversation) -> None:
    spec = f"openai:{conv.model}" if conv.model else "chat"
    history: list[dict[str, Any]] = []
    for item in conv.messages:
        message = item.message
        role = message["role"]
        if role == "assistant":
            request: dict[str, Any] = {"messages": list(history)}
            if conv.model:
                request["model"] = conv.model
            if conv.tools is not None:
                request["tools"] = conv.tools
            response = {"choices": [{"index": 0, "message": message, "finish_reason": item.finish}]}
            conversations.answer(session, request, response, model=spec, latency_ms=None)
        elif item.status is not None:  # a tool result
            call_id = message.get("tool_call_id")
            name = "?" if call_id is not None else str(message.get("name") or "?")
            conversations.tool_result(session, call_id, name, json_or_text(message.get("content")), status=item.status)
        history.append(message)
    if conv.outcome is not None:
        conversations.session(session).state("outcome", conversations.redactor.redact({"value": conv.outcome}))


def import_chat(
    store: str | Path | None,
    paths: list[Path],
    map_path: Path | None = None,
    *,
    run_id: str | None = None,
    skip_bad: bool = False,
    redactor: Redactor | None = None,
) -> ImportSummary:
    """Import the conversations of ``paths`` (with the map in ``map_path``, else the defaults) into a
    new run; nothing is written unless all input is good (or ``skip_bad``)."""
    if not paths:
        raise SdbError("import chat: no FILE given")
    m = load_chat_map(map_path)
    rules = redactor if redactor is not None else load_redactor()
    found, bad = read_conversations(paths, m, rules, skip_bad=skip_bad)
    named, repeat, duplicates = _sessions(found, skip_bad)
    bad += duplicates
    if not named:
        where = str(paths[0]) if len(paths) == 1 else ", ".join(str(p) for p in paths)
        raise SdbError(f"{where}: no conversation to import" + (f" ({bad} bad skipped)" if bad else ""))
    ticks = itertools.count(1)
    recorder = Recorder(
        store,
        {
            "mode": "record",
            "repeat": repeat,
            "imported_from": [str(p) for p in paths],
            "map": str(map_path) if map_path is not None else None,
            "fields": m.as_dict(),
            "redaction": rules.names,
            "skipped": bad,
        },
        run_id=run_id,
        handle_signals=False,
        recorder="chat",
        clock=lambda: next(ticks) * _TICK_NS,
    )
    conversations = ConversationRecorder(recorder, rules)
    try:
        for session, conv in named:
            try:
                _write(conversations, session, conv)
            except (PayloadError, RecursionError) as exc:  # found only as it is written: all or nothing
                reason = "JSON nested too deep" if isinstance(exc, RecursionError) else str(exc)
                raise SdbError(f"{conv.where}: {reason}") from None
        recorder.close()
    except BaseException:
        recorder.close("partial")
        recorder.store.delete_run(recorder.run_id)  # all or nothing
        raise
    return ImportSummary(recorder.run_id, recorder.events_written, len(conversations.conversations), bad)


# -- export ----------------------------------------------------------------------------------------


@dataclass
class ChatExport:
    """What :func:`export_chat` wrote: conversations, the sessions it could not rebuild (no llm call
    with messages), and those whose earlier calls are not all in the last call's history."""

    conversations: int = 0
    skipped: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)


def _reply(response: Any) -> dict[str, Any] | None:
    """The assistant message of a recorded answer (OpenAI choices, an Anthropic message), OpenAI-shaped."""
    if not isinstance(response, Mapping):
        return None
    choices = response.get("choices")
    message: Any = None
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        message = choices[0].get("message")
    elif isinstance(response.get("content"), list):  # an Anthropic message
        message = {"role": "assistant", "content": response["content"]}
    if not isinstance(message, Mapping):
        return None
    try:
        return _assistant({**message, "role": "assistant"}, "response").message
    except ValueError:
        return {**message, "role": "assistant"}


def _effect_call(effect: Mapping[str, Any], actions: Mapping[int, Mapping[str, Any]]) -> tuple[str | None, Any]:
    """(call id, content) of an effect: the chat-shaped result's own, else its action's call id."""
    result = effect["payload"].get("result")
    if isinstance(result, Mapping) and "call_id" in result:
        return (str(result["call_id"]) if result["call_id"] is not None else None), result.get("content")
    parent = actions.get(effect["parent"]) if effect["parent"] is not None else None
    call_id = parent["payload"].get("call_id") if parent is not None else None
    return (call_id if isinstance(call_id, str) else None), result


def _content(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _session_chat(session: str, events: list[dict[str, Any]], report: ChatExport) -> dict[str, Any] | None:
    calls = [
        e
        for e in events
        if e["kind"] == "llm"
        and e["payload"].get("content") != "missing"
        and isinstance(e["payload"].get("request"), Mapping)
        and isinstance(e["payload"]["request"].get("messages"), list)
    ]
    if not calls:
        report.skipped.append(session)
        return None
    last = calls[-1]
    request = last["payload"]["request"]
    messages: list[dict[str, Any]] = [dict(msg) for msg in request["messages"] if isinstance(msg, Mapping)]
    history = canonical_bytes(messages)
    for call in calls[:-1]:
        earlier = call["payload"]["request"]["messages"]
        if len(earlier) > len(messages) or not history.startswith(canonical_bytes(earlier)[:-1]):
            report.partial.append(session)
            break
    reply = _reply(last["payload"].get("response"))
    if reply is not None:
        messages.append(reply)
    actions = {e["seq"]: e for e in events if e["kind"] == "action"}
    effects = [(e, *_effect_call(e, actions)) for e in events if e["kind"] == "effect"]
    for effect, call_id, content in effects:
        if effect["seq"] > last["seq"]:
            tool: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": _content(content)}
            if call_id is None:
                tool = {"role": "tool", "name": effect["name"], "content": _content(content)}
            messages.append(tool)
    # the k-th tool message with id X is the k-th effect with id X: mark those that failed
    failed: dict[str | None, list[bool]] = {}
    for effect, call_id, _ in effects:
        failed.setdefault(call_id, []).append(effect["status"] == "error")
    seen: dict[str | None, int] = {}
    for msg in messages:
        if msg.get("role") in ("tool", "function"):
            cid = msg.get("tool_call_id")
            k = seen.get(cid, 0)
            seen[cid] = k + 1
            flags = failed.get(cid, [])
            if k < len(flags) and flags[k]:
                msg["is_error"] = True
    base = _REPEATED.match(session)
    out: dict[str, Any] = {"id": base.group(1) if base else session}
    if base:
        out["repeat"] = int(base.group(2))
    out["messages"] = messages
    model = request.get("model")
    if not isinstance(model, str) or not model:
        spec = last.get("model")
        model = spec.split(":", 1)[1] if isinstance(spec, str) and ":" in spec else None
    if model:
        out["model"] = model
    if isinstance(request.get("tools"), list):
        out["tools"] = request["tools"]
    outcomes = [e for e in events if e["kind"] == "state" and e["name"] == "outcome"]
    if outcomes and isinstance(outcomes[-1]["payload"], Mapping) and "value" in outcomes[-1]["payload"]:
        out["outcome"] = outcomes[-1]["payload"]["value"]
    return out


def export_chat(store: Store, run_id: str, report: ChatExport | None = None) -> Iterator[dict[str, Any]]:
    """Every session of ``run_id`` as one chat-format conversation, in session order (see the module
    docstring); ``report`` counts what was written and what could not be."""
    report = report if report is not None else ChatExport()
    table = run_events(store, run_id)
    for session, events in itertools.groupby(event_dicts(table), key=lambda e: str(e["session_id"])):
        conversation = _session_chat(session, list(events), report)
        if conversation is not None:
            report.conversations += 1
            yield conversation


def write_chat(store: Store, run_id: str, out: Path | IO[bytes]) -> ChatExport:
    """Write :func:`export_chat` as JSON lines to ``out`` (a file, written atomically, or a stream)."""
    report = ChatExport()

    def lines(fh: IO[bytes]) -> None:
        for conversation in export_chat(store, run_id, report):
            fh.write(json.dumps(conversation, ensure_ascii=False).encode() + b"\n")

    if isinstance(out, Path):
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            with open(tmp, "wb") as fh:
                lines(fh)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(out)
    else:
        lines(out)
    return report
