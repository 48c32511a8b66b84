"""What ``llama:MODEL`` hands llama.cpp and reads back: a chat request as plain turns a small model's
template takes, the tools offered as one JSON-schema-constrained call (compiled to a llama.cpp
grammar), and the constrained answer as a chat-completions ``tool_calls`` answer (see
:mod:`sdb.providers._llama_local`). Pure functions of the request, so they are tested without a model."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sdbctl.sdb.providers._base import ProviderError

MAX_STRING = 32  # characters in a free string of a constrained answer
MAX_ITEMS = 4  # items in a list of a constrained answer


def bounded(schema: Any) -> Any:
    """``schema`` with every free string cut at :data:`MAX_STRING` characters and every list at
    :data:`MAX_ITEMS` items, where it sets no bound of its own: a small model inside a string can
    ramble until ``max_tokens`` (seen with Gemma 3 270M), and the grammar then never closes the JSON."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    kind = out.get("type")
    free = not any(k in out for k in ("enum", "const", "pattern", "format"))
    if (kind == "string" or (isinstance(kind, list) and "string" in kind)) and free and "maxLength" not in out:
        out["maxLength"] = MAX_STRING
    if kind == "array" and "maxItems" not in out:
        out["maxItems"] = MAX_ITEMS
    return out


def tool_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to one of ``tools``: ``{"name": ..., "arguments": {...}}``, its
    strings and lists :func:`bounded`. The tools' ``$defs`` (pydantic's nested models) move to the
    root, where their ``#/$defs/...`` references point."""
    choices = []
    defs: dict[str, Any] = {}
    for tool in tools:
        fn = tool.get("function") or {}
        params = dict(bounded(fn.get("parameters") or {"type": "object"}))
        defs.update(params.pop("$defs", None) or {})
        choices.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn.get("name")}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    schema = choices[0] if len(choices) == 1 else {"anyOf": choices}
    return {**schema, "$defs": defs} if defs else schema


def _tool_instruction(tools: list[dict[str, Any]]) -> str:
    """What the model is told of the tools: each one's name, description and argument schema (the
    grammar enforces the schema; shown too, a 135M model fills it with far fewer nonsense values)."""
    described = [
        {
            "name": (t.get("function") or {}).get("name"),
            "description": (t.get("function") or {}).get("description", ""),
            "arguments": ((t.get("function") or {}).get("parameters") or {}).get("properties", {}),
        }
        for t in tools
    ]
    return (
        'Answer with exactly one JSON object {"name": TOOL, "arguments": {...}} that calls one of these '
        f"tools: {json.dumps(described, separators=(',', ':'))}"
    )


def chat_messages(request: Mapping[str, Any]) -> list[dict[str, str]]:
    """The request's messages as plain text turns a small model's chat template takes: an earlier tool
    call as the JSON the model would have written, a tool result as a user turn."""
    out: list[dict[str, str]] = []
    for m in request.get("messages") or []:
        role = m.get("role")
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content) if content else ""
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c.get("function", {}).get("name"), "arguments": c.get("function", {}).get("arguments")}
                for c in m["tool_calls"]
            ]
            text = json.dumps(calls[0] if len(calls) == 1 else calls)
        elif role == "tool":
            role, text = "user", f"Result of your call: {text}"
        elif role not in ("system", "user", "assistant"):
            role = "user"
        out.append({"role": str(role), "content": text})
    tools = request.get("tools") or []
    if tools:
        instruction = _tool_instruction(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instruction}"}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, Mapping) else None


def _history_units(messages: list[Any]) -> list[list[Any]]:
    """``messages`` in the units history is dropped by: one message each, except that a tool result
    goes with the message before it (the assistant call it answers, or that call's other results)."""
    units: list[list[Any]] = []
    for m in messages:
        if _role(m) in ("tool", "function") and units and _role(units[-1][0]) == "assistant":
            units[-1].append(m)
        else:
            units.append([m])
    return units


def _droppable(units: list[list[Any]]) -> list[int]:
    """The units history may drop, oldest first: all but the system messages and the last one."""
    return [i for i, u in enumerate(units[:-1]) if _role(u[0]) not in ("system", "developer")]


def shortest_history(messages: list[Any]) -> list[Any]:
    """What :func:`fit_history` keeps at the most: the system messages and the last exchange."""
    units = _history_units(messages)
    gone = set(_droppable(units))
    return [m for i, u in enumerate(units) if i not in gone for m in u]


def fit_history(messages: list[Any], fits: Callable[[list[Any]], bool]) -> tuple[list[Any], int] | None:
    """``messages`` with the fewest of their oldest non-system messages dropped for ``fits`` to hold,
    and how many were dropped; None when even the system messages and the last exchange (the last
    message, with the call it answers) do not fit. Messages go whole, a tool result with its call."""
    if fits(messages):
        return messages, 0
    units = _history_units(messages)
    droppable = _droppable(units)

    def without(k: int) -> list[Any]:
        gone = set(droppable[:k])
        return [m for i, u in enumerate(units) if i not in gone for m in u]

    if not droppable or not fits(without(len(droppable))):
        return None
    low, high = 1, len(droppable)  # the fewest units to drop: fits(without(high)) holds, and not at 0
    while low < high:
        mid = (low + high) // 2
        if fits(without(mid)):
            high = mid
        else:
            low = mid + 1
    return without(high), sum(len(units[i]) for i in droppable[:high])


def response_format(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """llama.cpp's ``response_format``: the tools' call schema, else the request's JSON schema."""
    tools = request.get("tools") or []
    if tools:
        return {"type": "json_object", "schema": tool_schema(tools)}
    given = request.get("response_format")
    if isinstance(given, Mapping):
        if given.get("type") == "json_schema":
            schema = (given.get("json_schema") or {}).get("schema")
            return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
        if given.get("type") == "json_object":
            return dict(given)
    return None


def as_openai(raw: Mapping[str, Any], *, tools: bool, model: str) -> dict[str, Any]:
    """llama.cpp's answer in the chat-completions shape; with tools, the constrained JSON as a
    ``tool_calls`` entry (kept as text when it does not parse: cut off at ``max_tokens``)."""
    choice = (raw.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = choice.get("finish_reason") or "stop"
    if tools:
        try:  # strict=False: llama.cpp's bounded-string grammar lets a raw newline into a string
            call = json.loads(text, strict=False)
        except json.JSONDecodeError:
            call = None
        if isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments"), dict):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                    }
                ],
            }
            finish = "tool_calls"
    return {
        "id": raw.get("id", "llama"),
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": dict(raw.get("usage") or {}),
    }


def compile_grammar(fmt: Mapping[str, Any] | None) -> Any:
    """The llama.cpp grammar of a ``response_format``, compiled here: llama-cpp-python would fall back
    to free JSON, silently, on a schema it cannot compile; here that is a one-line error."""
    if fmt is None:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    schema = fmt.get("schema")
    try:
        if schema:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    except Exception as exc:  # the converter asserts, and raises what its input makes it raise
        raise ProviderError(
            f"llama: the answer's schema cannot be a grammar ({type(exc).__name__}: {exc})", retryable=False
        ) from None
