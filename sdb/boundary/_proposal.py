"""Propose: turn a model's raw answer into candidate actions, or say precisely why that failed.

Reads OpenAI chat-completions ``tool_calls`` (and the legacy ``function_call``), Anthropic Messages
``tool_use`` blocks, and a JSON object in plain text, fenced (```json ... ```) or bare, shaped as
``{"name": ..., "arguments": {...}}`` (``tool``/``action``/``function`` and ``args``/``input``/
``parameters``/``action_input`` are accepted too, the last as ReAct-style agents write it). Nothing
here validates arguments: that is the verifier's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.errors import PayloadError
from sdbctl.sdb.events import canonical_bytes, loads

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_NAME_KEYS = ("name", "tool", "action", "function")
_ARG_KEYS = ("arguments", "args", "input", "parameters", "action_input")


@dataclass(frozen=True)
class Proposal:
    """A candidate action as the model proposed it: name, raw arguments, and the call id if any."""

    name: str
    args: Any
    call_id: str | None = None


@dataclass(frozen=True)
class ParseFailure:
    """The model's answer held no action we could read, and why."""

    reason: str


def _json_object_in_text(text: str) -> Any:
    """The first JSON object in ``text``: inside a code fence if there is one, else the first ``{...}``."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] or [text]
    decoder = json.JSONDecoder()
    last_error = "no JSON object found"
    for chunk in candidates:
        start = chunk.find("{")
        while start >= 0:
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except RecursionError:
                raise ValueError("JSON nested too deep") from None
            except json.JSONDecodeError as exc:
                last_error = f"invalid JSON ({exc.msg} at position {exc.pos})"
                start = chunk.find("{", start + 1)
                continue
            if isinstance(value, dict):
                try:
                    canonical_bytes(value)  # NaN, an infinity, an int outside 64 bits: not an action to keep
                except PayloadError as exc:
                    last_error = str(exc)
                else:
                    return value
            start = chunk.find("{", start + 1)
    raise ValueError(last_error)


def _from_object(obj: Mapping[str, Any]) -> Proposal | ParseFailure:
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    if name is None and isinstance(obj.get("function"), Mapping):  # {"function": {"name", "arguments"}}
        return _from_object(obj["function"])
    if name is None:
        return ParseFailure(f"JSON object has no action name (one of {', '.join(_NAME_KEYS)})")
    args: Any = next((obj[k] for k in _ARG_KEYS if k in obj), {})
    if isinstance(args, str):
        try:
            args = loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return ParseFailure(f"arguments of {name!r} are not valid JSON ({exc.msg} at position {exc.pos})")
        except PayloadError as exc:  # NaN, a key twice, nested too deep: not an action we can keep
            return ParseFailure(f"arguments of {name!r}: {exc}")
    return Proposal(name, args, obj.get("id") if isinstance(obj.get("id"), str) else None)


def parse_text(text: str) -> list[Proposal] | ParseFailure:
    """A JSON object in free text, fenced or not."""
    try:
        obj = _json_object_in_text(text)
    except ValueError as exc:
        return ParseFailure(f"text answer holds no action: {exc}")
    found = _from_object(obj)
    return found if isinstance(found, ParseFailure) else [found]


def _openai_message(message: Mapping[str, Any]) -> list[Proposal] | ParseFailure:
    calls = message.get("tool_calls") or []
    if calls:
        if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
            return ParseFailure(f"tool_calls is not a list of tool calls: {calls!r:.60}")
        proposals = []
        for call in calls:
            fn = call.get("function")
            fn = fn if isinstance(fn, Mapping) else {}
            name = fn.get("name")
            if not isinstance(name, str) or not name:
                return ParseFailure(f"tool call {call.get('id')!r} has no function name")
            raw = fn.get("arguments", "")
            if isinstance(raw, Mapping):
                args: Any = dict(raw)
            else:
                try:
                    args = loads(raw) if isinstance(raw, str) and raw.strip() else {}
                except json.JSONDecodeError as exc:
                    return ParseFailure(
                        f"arguments of tool call {name!r} are not valid JSON ({exc.msg} at position {exc.pos})"
                    )
                except PayloadError as exc:  # NaN, a key twice, nested too deep: not an action we can keep
                    return ParseFailure(f"arguments of tool call {name!r}: {exc}")
            proposals.append(Proposal(name, args, call.get("id")))
        return proposals
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        return _openai_message({"tool_calls": [{"id": None, "function": legacy}]})
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    if isinstance(content, str) and content.strip():
        return parse_text(content)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        return ParseFailure(f"model refused: {refusal[:200]}")
    return ParseFailure("answer has neither tool calls nor text")


def _anthropic_blocks(blocks: list[Any]) -> list[Proposal] | ParseFailure:
    uses = [b for b in blocks if isinstance(b, Mapping) and b.get("type") == "tool_use"]
    if uses:
        return [Proposal(str(b.get("name")), b.get("input", {}), b.get("id")) for b in uses]
    text = "".join(b.get("text", "") for b in blocks if isinstance(b, Mapping) and b.get("type") == "text")
    if text.strip():
        return parse_text(text)
    return ParseFailure("answer has neither tool_use blocks nor text")


def parse_response(response: Any) -> list[Proposal] | ParseFailure:
    """Candidate actions in a raw model answer (OpenAI or Anthropic shape, or plain text)."""
    if isinstance(response, str):
        return parse_text(response)
    if not isinstance(response, Mapping):
        return ParseFailure(f"answer is a {type(response).__name__}, not a chat completion")
    choices = response.get("choices")
    if isinstance(choices, list):
        if not choices:
            return ParseFailure("chat completion has no choices")
        message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
        if not isinstance(message, Mapping):
            return ParseFailure("first choice has no message")
        return _openai_message(message)
    if isinstance(response.get("content"), list):
        return _anthropic_blocks(response["content"])
    if "tool_calls" in response or "content" in response:  # a bare assistant message
        return _openai_message(response)
    return ParseFailure("answer is neither an OpenAI chat completion nor an Anthropic message")
