"""Chat messages as the requests of a run hold them: OpenAI-shaped, whatever the log wrote (OpenAI
``tool_calls``, Anthropic ``tool_use`` / ``tool_result`` blocks), each checked so that a bad one is an
error naming its place (``messages[3].tool_calls[0]: ...``) before anything is written."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.errors import PayloadError
from sdbctl.sdb.events import loads


@dataclass
class Message:
    """One message, OpenAI-shaped, and what its events need beyond it: a tool result's status, an
    answer's finish reason."""

    message: dict[str, Any]  # OpenAI-shaped, as the requests hold it
    status: str | None = None  # a tool message: ok / error
    finish: str | None = None  # an assistant message: its finish reason


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


def _status(text: str, is_error: Any, pattern: re.Pattern[str] | None) -> str:
    return "error" if is_error is True or (pattern is not None and pattern.search(text)) else "ok"


def _tool(message: Mapping[str, Any], where: str, pattern: re.Pattern[str] | None) -> Message:
    call_id = _call_id(message.get("tool_call_id"), f"{where}.tool_call_id")
    text = _text(message.get("content"))
    out = {k: v for k, v in message.items() if k != "is_error"}
    out["content"] = text
    if call_id is None:
        out.pop("tool_call_id", None)
    return Message(out, status=_status(text, message.get("is_error"), pattern))


def _user(message: Mapping[str, Any], where: str, pattern: re.Pattern[str] | None) -> list[Message]:
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
        out.append(Message(tool, status=_status(text, block.get("is_error"), pattern)))
    if rest:
        out.append(Message({**message, "content": rest}))
    return out


def openai_messages(raw: list[Any], where: str, pattern: re.Pattern[str] | None) -> list[Message]:
    """The messages list at ``where``, each checked and OpenAI-shaped; a tool result whose text matches
    ``pattern`` failed. A bad message is a ValueError naming it (``messages[3]: ...``)."""
    out: list[Message] = []
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
            out.append(_tool(message, at, pattern))
        elif role == "user":
            out += _user(message, at, pattern)
        else:
            out.append(Message(dict(message)))
    return out


def openai_tools(value: Any) -> list[Any] | None:
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
