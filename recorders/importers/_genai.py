"""OpenTelemetry GenAI spans read back into the OpenAI chat shape sdbctl records and replays.

Content can sit in four places, newest first: the ``gen_ai.input.messages`` /
``gen_ai.output.messages`` / ``gen_ai.system_instructions`` attributes (JSON strings or structured
values; the same names on a ``gen_ai.client.inference.operation.details`` span event); the older
indexed attributes ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*``; the older span events
``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice``; and the ``gen_ai.prompt`` /
``gen_ai.completion`` attributes of ``gen_ai.content.prompt`` / ``gen_ai.content.completion`` events;
and, where none of these is, Google ADK's own ``gcp.vertex.agent.*`` attributes (``_adk``). A tool
span's arguments and result: the semconv attributes, else PydanticAI's version 2 or ADK's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sdbctl.recorders.importers._adk import TOOL_ARGUMENTS, TOOL_RESPONSE, standard_attributes
from sdbctl.recorders.importers._otlp import Span
from sdbctl.sdb.errors import PayloadError
from sdbctl.sdb.events import json_or_text

INFERENCE = frozenset({"chat", "text_completion", "generate_content"})
_REQUEST_PARAMS = {
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.seed": "seed",
    "gen_ai.request.frequency_penalty": "frequency_penalty",
    "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.stop_sequences": "stop",
    "gen_ai.request.choice.count": "n",
}
_TOKENS_LIMIT = 2**63  # a token count fits the int64 column
_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")
_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def operation(span: Span) -> str | None:
    """``chat`` (any inference), ``execute_tool``, ``invoke_agent``, or None for other spans."""
    attrs = span.attributes
    op = attrs.get("gen_ai.operation.name")
    if op in INFERENCE:
        return "chat"
    if op in ("execute_tool", "invoke_agent"):
        return str(op)
    kind = attrs.get("llm.request.type")
    if kind is not None and kind not in ("chat", "completion"):
        return None  # an older embeddings or rerank span
    if op is None and (
        kind in ("chat", "completion")
        or any(_INDEXED.match(k) for k in attrs)
        or ("gen_ai.request.model" in attrs and "gen_ai.tool.name" not in attrs)
    ):
        return "chat"  # the older conventions, before gen_ai.operation.name
    return None


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def from_parts(messages: Any) -> list[dict[str, Any]] | None:
    """GenAI semconv messages (``{"role", "parts": [...]}``) as OpenAI chat messages; messages already
    in the OpenAI shape pass through."""
    messages = json_or_text(messages)
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        return None
    out: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        parts = message.get("parts")
        if not isinstance(parts, list):  # OpenAI-shaped already
            out.append(dict(message))
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        answered = False  # tool results, sent as messages of their own
        for part in parts:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("content", "")))
            elif kind == "tool_call":
                calls.append(
                    {
                        "id": part.get("id"),
                        "type": "function",
                        "function": {"name": part.get("name"), "arguments": _arguments(part.get("arguments", {}))},
                    }
                )
            elif kind == "tool_call_response":
                response = part.get("response", part.get("result"))
                out.append({"role": "tool", "tool_call_id": part.get("id"), "content": _text(response)})
                answered = True
        if texts or calls or not (answered or message.get("role") == "tool"):  # PydanticAI, ADK: results as "user"
            entry: dict[str, Any] = {"role": message.get("role", "user"), "content": "".join(texts) if texts else None}
            if calls:
                entry["tool_calls"] = calls
            if message.get("name"):
                entry["name"] = message["name"]
            if message.get("finish_reason"):  # an output message's own
                entry["finish_reason"] = message["finish_reason"]
            out.append(entry)
    return out


def _indexed(attrs: Mapping[str, Any], which: str) -> list[dict[str, Any]] | None:
    """``gen_ai.prompt.N.*`` or ``gen_ai.completion.N.*`` as OpenAI messages (N ascending)."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        m = _INDEXED.match(key)
        if m is None or m.group(1) != which:
            continue
        message = found.setdefault(int(m.group(2)), {})
        rest = m.group(3)
        call = re.match(r"^tool_calls\.(\d+)\.(\w+)$", rest)
        if call is not None:
            calls = message.setdefault("_calls", {})
            calls.setdefault(int(call.group(1)), {})[call.group(2)] = value
        else:
            message[rest] = value
    if not found:
        return None
    out = []
    for index in sorted(found):
        message = found[index]
        calls = message.pop("_calls", {})
        entry = {"role": message.pop("role", "assistant" if which == "completion" else "user")}
        entry["content"] = message.pop("content", None)
        if calls:
            entry["tool_calls"] = [
                {
                    "id": c.get("id"),
                    "type": "function",
                    "function": {"name": c.get("name"), "arguments": _arguments(c.get("arguments", "{}"))},
                }
                for _, c in sorted(calls.items())
            ]
        entry.update({k: v for k, v in message.items() if k in ("tool_call_id", "name", "finish_reason")})
        out.append(entry)
    return out


def _event_messages(span: Span) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """Messages and choices carried as span events (the older conventions)."""
    inputs: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    for name, given in span.events:
        # Azure's AI Inference and AI Agents SDKs put the event's fields in one JSON attribute
        packed = json_or_text(given.get("gen_ai.event.content"))
        attrs = {**packed, **given} if isinstance(packed, Mapping) else given
        if name in _EVENT_ROLES:
            entry: dict[str, Any] = {"role": attrs.get("role", _EVENT_ROLES[name]), "content": _json_text(attrs)}
            if attrs.get("tool_calls") is not None:
                entry["tool_calls"] = _calls(json_or_text(attrs["tool_calls"]))
            if name == "gen_ai.tool.message" and attrs.get("id") is not None:
                entry["tool_call_id"] = attrs["id"]
            inputs.append(entry)
        elif name == "gen_ai.choice":
            message = json_or_text(attrs.get("message", {}))
            message = dict(message) if isinstance(message, Mapping) else {"content": message}
            if attrs.get("tool_calls") is not None:
                message["tool_calls"] = json_or_text(attrs["tool_calls"])
            if "content" in attrs:
                message["content"] = attrs["content"]
            message.setdefault("role", "assistant")
            if message.get("tool_calls"):
                message["tool_calls"] = _calls(message["tool_calls"])
            message["finish_reason"] = attrs.get("finish_reason")
            choices.append(message)
        elif name == "gen_ai.content.prompt" and "gen_ai.prompt" in attrs:
            inputs.extend(from_parts(attrs["gen_ai.prompt"]) or [])
        elif name == "gen_ai.content.completion" and "gen_ai.completion" in attrs:
            choices.extend(from_parts(attrs["gen_ai.completion"]) or [])
    return inputs or None, choices or None


def _json_text(attrs: Mapping[str, Any]) -> Any:
    content = attrs.get("content")
    return content if content is None or isinstance(content, str) else _text(content)


def _calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, Mapping):
            continue
        fn: Mapping[str, Any] = call["function"] if isinstance(call.get("function"), Mapping) else call
        out.append(
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": fn.get("name"), "arguments": _arguments(fn.get("arguments", "{}"))},
            }
        )
    return out


def _details(span: Span) -> dict[str, Any]:
    """The span's attributes, with a ``gen_ai.client.inference.operation.details`` event's merged in,
    over what ADK's own attributes stand for (read only where the standard ones are absent)."""
    attrs = {**standard_attributes(span.attributes), **span.attributes}
    for name, event_attrs in span.events:
        if name == "gen_ai.client.inference.operation.details":
            attrs.update(event_attrs)
    return attrs


def _tools(attrs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    definitions = json_or_text(attrs.get("gen_ai.tool.definitions"))
    tools: list[dict[str, Any]] = []
    for tool in definitions if isinstance(definitions, list) else []:
        if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
            tools.append(dict(tool))
        elif isinstance(tool, Mapping) and tool.get("name"):
            fn = {k: json_or_text(tool[k]) for k in ("name", "description", "parameters") if k in tool}
            tools.append({"type": "function", "function": fn})
    legacy: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        m = re.match(r"^llm\.request\.functions\.(\d+)\.(name|description|parameters)$", key)
        if m is not None:
            legacy.setdefault(int(m.group(1)), {})[m.group(2)] = json_or_text(value)
    tools += [{"type": "function", "function": legacy[i]} for i in sorted(legacy)]
    return tools or None


def _checked(messages: list[Any] | None, which: str) -> None:
    """A :class:`PayloadError` naming what is wrong unless ``messages`` are as the chat shape needs them
    (objects, their ``tool_calls`` a list of objects): a one-line error with the span's place."""
    for k, message in enumerate(messages or []):
        if not isinstance(message, Mapping):
            raise PayloadError(f"{which} message {k} is {type(message).__name__}, not an object")
        calls = message.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(isinstance(c, Mapping) for c in calls)):
            raise PayloadError(f"{which} message {k}: tool_calls must be a list of objects, not {calls!r:.60}")


def inference(span: Span) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """(request, response, content captured) of an inference span, in the OpenAI chat shape."""
    attrs = _details(span)
    event_in, event_out = _event_messages(span)
    system = json_or_text(attrs.get("gen_ai.system_instructions"))
    messages = from_parts(attrs["gen_ai.input.messages"]) if "gen_ai.input.messages" in attrs else None
    if messages is not None:  # an answer's own finish reason is not part of what is sent back (PydanticAI)
        messages = [{k: v for k, v in m.items() if k != "finish_reason"} for m in messages]
    messages = messages if messages is not None else _indexed(attrs, "prompt") or event_in
    if messages is not None and system:
        parts = system if isinstance(system, list) else [{"type": "text", "content": system}]
        text = "".join(str(p.get("content", "")) for p in parts if isinstance(p, Mapping)) or _text(system)
        messages = [{"role": "system", "content": text}, *messages]
    outputs = from_parts(attrs["gen_ai.output.messages"]) if "gen_ai.output.messages" in attrs else None
    outputs = outputs if outputs is not None else _indexed(attrs, "completion") or event_out
    model = attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model") or "unknown"
    request: dict[str, Any] = {"model": model}
    if messages is not None:
        request["messages"] = messages
    tools = _tools(attrs)
    if tools:
        request["tools"] = tools
    for key, param in _REQUEST_PARAMS.items():
        if key in attrs:
            request[param] = attrs[key]
    if messages is None or outputs is None:
        return request, None, False
    _checked(messages, "input")
    _checked(outputs, "output")
    reasons = attrs.get("gen_ai.response.finish_reasons") or []
    reasons = [reasons] if isinstance(reasons, str) else reasons
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise PayloadError(f"gen_ai.response.finish_reasons must be a list of strings, not {reasons!r:.60}")
    choices = []
    for index, output in enumerate(outputs):
        message = {k: v for k, v in output.items() if k != "finish_reason"}
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        reason = output.get("finish_reason") or (reasons[index] if index < len(reasons) else None)
        choices.append({"index": index, "message": message, "finish_reason": reason})
    response: dict[str, Any] = {"object": "chat.completion", "choices": choices}
    for key, field_name in (("gen_ai.response.id", "id"), ("gen_ai.response.model", "model")):
        if key in attrs:
            response[field_name] = attrs[key]
    usage = tokens(attrs)
    if usage != (None, None):
        response["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return request, response, True


def tokens(attrs: Mapping[str, Any]) -> tuple[int | None, int | None]:
    def first(*keys: str) -> int | None:
        for key in keys:
            value = attrs.get(key)
            if isinstance(value, int | float) and -_TOKENS_LIMIT <= value < _TOKENS_LIMIT:  # not NaN: finite
                return int(value)
        return None

    return (
        first("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        first("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    )


def model_spec(span: Span) -> str:
    """``provider:model`` as ``sdbctl replay --model`` would name it (``openai`` when unknown)."""
    attrs = span.attributes
    provider = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system") or "openai"
    model = attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model") or "unknown"
    return f"{provider}:{model}"


_TOOL_ARGUMENTS = ("gen_ai.tool.call.arguments", "tool_arguments", TOOL_ARGUMENTS)  # semconv, PydanticAI 2, ADK
_TOOL_RESULTS = ("gen_ai.tool.call.result", "tool_response", TOOL_RESPONSE)


def tool_call(span: Span) -> tuple[str | None, str, Any, Any, bool]:
    """(call id, tool name, arguments, result, result captured) of an ``execute_tool`` span; the
    arguments and result under the semconv names, else PydanticAI's version 2 or ADK's own."""
    attrs = span.attributes
    call_id = attrs.get("gen_ai.tool.call.id")
    name = attrs.get("gen_ai.tool.name") or span.name.removeprefix("execute_tool ").strip() or "?"
    args_key = next((k for k in _TOOL_ARGUMENTS if k in attrs), None)
    args = json_or_text(attrs[args_key]) if args_key is not None else None
    # ADK writes "{}" where content capture is off (so does a tool returning an empty object: rare)
    result_key = next((k for k in _TOOL_RESULTS if k in attrs and (k, attrs[k]) != (TOOL_RESPONSE, "{}")), None)
    result = json_or_text(attrs[result_key]) if result_key is not None else None
    return (str(call_id) if call_id else None), str(name), args, result, result_key is not None
