"""Google ADK's own span attributes read as the GenAI ones, for the spans that carry no others.

ADK's legacy telemetry (its schema 1, and every ADK before 2.x) writes the model call's content on a
``call_llm`` span as ``gcp.vertex.agent.llm_request`` (the ``LlmRequest``: ``contents`` and ``config``
in the google-genai shape, snake_case or camelCase) and ``gcp.vertex.agent.llm_response`` (the
``LlmResponse``), and a tool's as ``gcp.vertex.agent.tool_call_args`` / ``tool_response``. Here they
become ``gen_ai.input.messages`` (semconv parts), ``gen_ai.output.messages``,
``gen_ai.system_instructions``, ``gen_ai.tool.definitions`` and ``gen_ai.request.*``, so that one
mapping (``_genai``) reads every source. ADK writes ``{}`` where content capture is off and
``<not serializable>`` where it failed: no content then, and the call imports marked missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdbctl.sdb.events import json_or_text

_CONFIG_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "stop_sequences": "gen_ai.request.stop_sequences",
    "candidate_count": "gen_ai.request.choice.count",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}
TOOL_ARGUMENTS = "gcp.vertex.agent.tool_call_args"
TOOL_RESPONSE = "gcp.vertex.agent.tool_response"


def _field(obj: Mapping[str, Any], snake: str) -> Any:
    """``obj[snake]``, or its camelCase spelling (a ``by_alias`` dump, the REST API's JSON)."""
    if snake in obj:
        return obj[snake]
    head, *rest = snake.split("_")
    return obj.get(head + "".join(word.title() for word in rest))


def _list(value: Any) -> list[Any]:
    """A list held where one belongs; anything else (a hostile or damaged trace) as none."""
    return value if isinstance(value, list) else []


def _object(value: Any) -> Mapping[str, Any] | None:
    """A JSON object held in an attribute; None for ``{}``, text that is not JSON, or anything else."""
    parsed = json_or_text(value)
    return parsed if isinstance(parsed, Mapping) and parsed else None


def _parts(content: Any) -> dict[str, Any] | None:
    """A google-genai ``Content`` as a GenAI semconv message (``{"role", "parts"}``)."""
    if not isinstance(content, Mapping):
        return None
    parts: list[dict[str, Any]] = []
    for part in _list(content.get("parts")):
        if not isinstance(part, Mapping) or part.get("thought"):
            continue  # a thought is the model's own reasoning, not sent back as the conversation
        call, response = _field(part, "function_call"), _field(part, "function_response")
        if isinstance(part.get("text"), str):
            parts.append({"type": "text", "content": part["text"]})
        elif isinstance(call, Mapping):
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": call.get("name"), "arguments": call.get("args", {})}
            )
        elif isinstance(response, Mapping):
            parts.append({"type": "tool_call_response", "id": response.get("id"), "response": response.get("response")})
    role = content.get("role")
    return {"role": "assistant" if role == "model" else role or "user", "parts": parts}


def _system(config: Mapping[str, Any]) -> str | None:
    instruction = _field(config, "system_instruction")
    if isinstance(instruction, str):
        return instruction
    message = _parts(instruction)
    texts = [p["content"] for p in message["parts"] if p["type"] == "text"] if message else []
    return "".join(texts) or None


def _definitions(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    for tool in _list(config.get("tools")):
        for fn in _list(_field(tool, "function_declarations")) if isinstance(tool, Mapping) else []:
            if isinstance(fn, Mapping) and fn.get("name"):
                schema = _field(fn, "parameters_json_schema") or fn.get("parameters")
                described = {"description": fn["description"]} if fn.get("description") else {}
                found.append({"name": fn["name"], **described, "parameters": schema})
    return found


def standard_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The GenAI attributes that ADK's ``gcp.vertex.agent.llm_request`` / ``llm_response`` stand for
    (empty when the span has neither)."""
    out: dict[str, Any] = {}
    request = _object(attrs.get("gcp.vertex.agent.llm_request"))
    if request is not None:
        contents = [m for m in map(_parts, _list(request.get("contents"))) if m is not None]
        out["gen_ai.input.messages"] = contents
        found = request.get("config")
        config: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        system = _system(config)
        if system:
            out["gen_ai.system_instructions"] = system
        tools = _definitions(config)
        if tools:
            out["gen_ai.tool.definitions"] = tools
        for key, attribute in _CONFIG_PARAMS.items():
            if _field(config, key) is not None:
                out[attribute] = _field(config, key)
    response = _object(attrs.get("gcp.vertex.agent.llm_response"))
    message = _parts(_field(response, "content")) if response is not None else None
    if message is not None and response is not None:
        reason = _field(response, "finish_reason")
        out["gen_ai.output.messages"] = [
            {**message, "finish_reason": reason.lower() if isinstance(reason, str) else None}
        ]
    return out
