"""Chat messages as the requests of a run hold them: OpenAI-shaped, whatever the log wrote (OpenAI
``tool_calls``, flat ``{"id", "name", "arguments"}`` calls as tau2-bench writes them, Anthropic
``tool_use`` / ``tool_result`` blocks; a tool result by ``tool_call_id`` or ``id``), each checked so that
a bad one is an error naming its place (``messages[3].tool_calls[0]: ...``) before anything is written;
and tool definitions, OpenAI-shaped, from a log or a ``--tools`` file."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.recorders.importers._input import get_path, read_text
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import canonical_json, loads

# the keys of an OpenAI chat message: what a request holds of a logged message; the rest is the log's
# own bookkeeping (tau2-bench's turn_idx, timestamp, cost, usage, raw_data), never sent to a model
OPENAI_KEYS = frozenset(("role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio"))


@dataclass
class Message:
    """One message, OpenAI-shaped, and what its events need beyond it: a tool result's status, an
    answer's finish reason."""

    message: dict[str, Any]  # OpenAI-shaped, as the requests hold it
    status: str | None = None  # a tool message: ok / error
    finish: str | None = None  # an assistant message: its finish reason
    flagged: bool | None = None  # a tool message: its value at the map's tool_error path, None without one


@dataclass(frozen=True)
class ResultRule:
    """What marks a tool result failed, besides ``is_error: true``: its text matching ``pattern``
    (the map's ``effect_error``), or a truthy value at the dotted path ``flag`` (``tool_error``)."""

    pattern: re.Pattern[str] | None = None
    flag: str | None = None

    def judge(self, text: str, result: Mapping[str, Any]) -> tuple[str, bool | None]:
        """The status of a tool result (``ok`` / ``error``) and its flag (None where it has none)."""
        value = get_path(result, self.flag) if self.flag else None
        flagged = None if value is None else bool(value)
        failed = result.get("is_error") is True or bool(flagged) or bool(self.pattern and self.pattern.search(text))
        return ("error" if failed else "ok"), flagged


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
    """Tool-call arguments as the JSON string OpenAI carries: an object is written as canonical JSON
    (the text whose parse the boundary digests); a string is kept as the model wrote it (the boundary
    records a parse failure when it is not JSON)."""
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
        return canonical_json(value)
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
    """A tool call, OpenAI-shaped: ``{"id", "function": {"name", "arguments"}}``, or flat ``{"id", "name",
    "arguments"}`` (tau2-bench; other keys such as its ``requestor`` dropped)."""
    if not isinstance(call, Mapping):
        raise ValueError(f"{where}: a tool call must be an object, not {type(call).__name__}")
    fn = call.get("function")
    if fn is None and "name" in call:  # flat
        fn = {"name": call.get("name"), "arguments": call.get("arguments")}
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


def assistant_message(message: Mapping[str, Any], where: str) -> Message:
    """An assistant message as OpenAI writes one: ``tool_use`` blocks become ``tool_calls``, text blocks
    the content; its finish reason kept, else the one its calls imply (the export reads replies so too)."""
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
    return Message(out, finish=reason)


def _tool(message: Mapping[str, Any], where: str, rule: ResultRule) -> Message:
    """A tool message; one with no ``tool_call_id`` but an ``id`` (tau2-bench) answers the call so named."""
    key = "id" if "tool_call_id" not in message and "id" in message else "tool_call_id"
    call_id = _call_id(message.get(key), f"{where}.{key}")
    text = _text(message.get("content"))
    out = {k: v for k, v in message.items() if k not in ("is_error", "tool_call_id", key)}
    out["content"] = text
    if call_id is not None:
        out["tool_call_id"] = call_id
    status, flagged = rule.judge(text, message)
    return Message(out, status=status, flagged=flagged)


def _user(message: Mapping[str, Any], where: str, rule: ResultRule) -> list[Message]:
    """A user message; Anthropic ``tool_result`` blocks in it are tool messages (then the rest)."""
    content = message.get("content")
    if not isinstance(content, list) or not any(
        isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content
    ):
        return [Message(dict(message))]
    out: list[Message] = []
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
        status, flagged = rule.judge(text, block)
        out.append(Message(tool, status=status, flagged=flagged))
    if rest:
        out.append(Message({**message, "content": rest}))
    return out


def _user_call_ids(calls: Any, where: str) -> set[str]:
    """The ids of a user message's own tool calls (None: it made none)."""
    if calls is None:
        return set()
    if not isinstance(calls, list):
        raise ValueError(f"{where} must be a list, not {type(calls).__name__}")
    return {c["id"] for c in calls if isinstance(c, Mapping) and isinstance(c.get("id"), str)}


def openai_messages(raw: list[Any], where: str, rule: ResultRule) -> list[Message]:
    """The messages list at ``where``, each checked and OpenAI-shaped; ``rule`` says which tool results
    failed. A bad message is a ValueError naming it (``messages[3]: ...``). Each keeps the keys of an
    OpenAI message (:data:`OPENAI_KEYS`) only. A user message's own tool calls (tau2-bench's user
    simulator acts on its phone) and the results that answer them never reached the agent: they are
    left out, and so is a user message that held nothing else."""
    out: list[Message] = []
    users: set[str] = set()  # the ids of the user's own calls not answered yet
    for i, message in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(message, Mapping):
            raise ValueError(f"{at}: a message must be an object, not {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str) or not role.strip():
            raise ValueError(f"{at}: a message with no role")
        if role == "assistant":
            out.append(assistant_message(message, at))
        elif role in ("tool", "function"):
            result = _tool(message, at, rule)
            if result.message.get("tool_call_id") in users:
                users.discard(result.message["tool_call_id"])
                continue
            out.append(result)
        elif role == "user":
            if "tool_calls" in message:  # not a key of an OpenAI user message
                users.update(_user_call_ids(message["tool_calls"], f"{at}.tool_calls"))
                message = {k: v for k, v in message.items() if k != "tool_calls"}
                if message.get("content") in (None, "", []):
                    continue
            out += _user(message, at, rule)
        else:
            out.append(Message(dict(message)))
    for item in out:
        if not OPENAI_KEYS.issuperset(item.message):
            item.message = {k: v for k, v in item.message.items() if k in OPENAI_KEYS}
    return out


def _tool_definition(tool: Any, at: str) -> dict[str, Any]:
    """One tool definition, OpenAI chat-shaped: an OpenAI one kept; Anthropic's (``name``,
    ``input_schema``) and the Responses API's flat one (``type: function``, ``name``) converted; a
    provider's built-in tool (another ``type``) kept as it is."""
    if not isinstance(tool, Mapping):
        raise ValueError(f"{at} must be a tool definition (an object), not {type(tool).__name__}")
    fn = tool.get("function")
    if isinstance(fn, Mapping) and isinstance(fn.get("name"), str) and fn["name"]:
        return dict(tool)
    name = tool.get("name")
    flat = "input_schema" in tool or tool.get("type") == "function"
    if fn is None and flat and isinstance(name, str) and name:
        out: dict[str, Any] = {"name": name}
        if tool.get("description") is not None:
            out["description"] = tool["description"]
        schema = tool.get("input_schema", tool.get("parameters"))
        if schema is not None:
            out["parameters"] = schema
        return {"type": "function", "function": out}
    if fn is None and isinstance(tool.get("type"), str) and tool["type"] != "function":
        return dict(tool)
    raise ValueError(
        f"{at} is neither an OpenAI tool definition "
        '({"type": "function", "function": {"name", ...}}) nor an Anthropic one ({"name", "input_schema"})'
    )


def openai_tools(value: Any, where: str = "tools") -> list[Any] | None:
    """The tool definitions at ``where`` (None: none), OpenAI-shaped (see :func:`_tool_definition`); a
    bad one is a ValueError naming it (``tools[1] ...``)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of tool definitions, not {type(value).__name__}")
    return [_tool_definition(tool, f"{where}[{i}]") for i, tool in enumerate(value)]


def load_tools(path: Path) -> list[Any]:
    """The tool definitions of a ``--tools`` file: a JSON list of OpenAI or Anthropic definitions, or an
    object with such a list under ``tools``; a bad file is one line naming it."""
    text = read_text(path, SdbError)
    try:
        value = loads(text)
    except json.JSONDecodeError as exc:
        raise SdbError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except PayloadError as exc:
        raise SdbError(f"{path}: {exc}") from None
    if isinstance(value, Mapping) and "tools" in value:
        value = value["tools"]
    if not isinstance(value, list):
        raise SdbError(
            f"{path}: must hold a list of tool definitions (OpenAI's or Anthropic's), or an object with one under "
            f'"tools"; not {type(value).__name__}'
        )
    if not value:
        raise SdbError(f"{path}: no tool definition in the list")
    try:
        tools = openai_tools(value)
    except ValueError as exc:
        raise SdbError(f"{path}: {exc}") from None
    return tools or []
