"""The OpenAI Agents SDK recorder: a tracing processor that records each trace as one session.

Two lines in an agent program::

    from sdbctl.recorders.openai_agents import SdbTracingProcessor
    add_trace_processor(SdbTracingProcessor(store=".sdb"))  # or set_trace_processors([...])

The SDK traces model calls, tool runs, handoffs and guardrails, not OpenTelemetry: its spans are read
in the process, where a response span still holds the whole ``Response`` and its input (its
``export()`` keeps only the id). Each model call goes through :class:`ConversationRecorder`, the one
place that turns chat traffic into ``llm``/``action``/``effect`` events (the proxy's and the
importers'), so the same answer gives the same actions here, there and in a ``recorded`` replay. A
Responses API call is therefore stored in the chat-completions shape that replay sends and the
boundary reads: instructions as the system message, input and output items as messages (by the SDK's
own converter), function tools as chat tools, the model settings as their chat fields.

The SDK calls a processor from the agent's own code path: nothing here prints or raises into it. A
recording failure is logged once, and the agent goes on unrecorded.

:class:`OpenAIAgentsAgent` makes an agent a workload that ``replay --mode session --agent`` runs again:
its agents cloned, every model answered by the replay's (tracing off), each function tool call served
its recorded result (its ``on_invoke_tool`` wrapped), the events written as this processor writes them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sdbctl.recorders.conversation import ConversationRecorder, OneSession, RecordedInputs, maybe_json
from sdbctl.sdb.agents import AgentContext, SessionItem
from sdbctl.sdb.boundary import EXECUTE, ValidAction, load_actions_setting
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import canonical_bytes, digest
from sdbctl.sdb.prompts import PromptLibrary
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import Redactor, load_redactor

try:
    import httpx2  # the SDK's own HTTP client (openai-agents requires it): the replay's in-process transport
    from agents import RunHooks
    from agents.tracing import TracingProcessor
except ImportError as exc:  # the SDK is an optional extra: say how to get it, in one line
    raise SdbError(
        "sdbctl.recorders.openai_agents needs the OpenAI Agents SDK: pip install 'sdbctl[openai-agents]'"
    ) from exc

log = logging.getLogger(__name__)

# Model settings a chat-completions request carries under the same name (the Responses API's
# max_output_tokens is the chat max_tokens); any other setting stays out of the replayed request.
_CHAT_SETTINGS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "max_tokens", "tool_choice")


@dataclass
class _Trace:
    """One trace being recorded: its session, and which agent each open span runs under."""

    session_id: str
    parents: dict[str, str | None] = field(default_factory=dict)  # span id -> parent span id
    agents: dict[str, str] = field(default_factory=dict)  # agent span id -> agent name
    last_step: str | None = None  # the step of the last model call (its handoff's call is in it)


def _plain(value: Any) -> Any:
    """A span value as JSON data: pydantic models dumped, anything not JSON as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _plain(dump(mode="json", exclude_none=True, by_alias=True))  # wire names: "schema", not "schema_"
    return str(value)


def _messages(items: Any) -> list[dict[str, Any]]:
    """Responses API items (a string is one user message) as chat messages, by the SDK's converter."""
    from agents.models.chatcmpl_converter import Converter

    return [dict(m) for m in _plain(Converter.items_to_messages(_plain(items)))]


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses API function tool as a chat-completions tool."""
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    """A Responses API ``tool_choice`` (``auto``, or ``{"type": "function", "name": ...}``) in chat form."""
    if isinstance(choice, Mapping) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _chat_response_format(found: Any) -> dict[str, Any] | None:
    """A Responses API ``text.format`` (an agent's ``output_type``) as a chat ``response_format``;
    None for plain text."""
    if not isinstance(found, Mapping) or found.get("type") not in ("json_schema", "json_object"):
        return None
    if found["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: found[k] for k in ("name", "description", "schema", "strict") if found.get(k) is not None}
    return {"type": "json_schema", "json_schema": schema}


def _settings(source: Mapping[str, Any]) -> dict[str, Any]:
    """The chat fields of a call's model settings (those that were set)."""
    out = {k: source[k] for k in _CHAT_SETTINGS if source.get(k) is not None}
    if "tool_choice" in out:
        out["tool_choice"] = _chat_tool_choice(out["tool_choice"])
    return out


def _answer(message: Mapping[str, Any], finish: str | None, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion holding ``message``, with the answer's id, model and usage."""
    usage = raw.get("usage") if isinstance(raw.get("usage"), Mapping) else {}
    completion: dict[str, Any] = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": dict(message), "finish_reason": finish}],
    }
    for key in ("id", "model"):
        if raw.get(key) is not None:
            completion[key] = raw[key]
    if usage:
        completion["usage"] = {
            "prompt_tokens": usage.get("input_tokens", usage.get("prompt_tokens")),
            "completion_tokens": usage.get("output_tokens", usage.get("completion_tokens")),
        }
    return completion


def _assistant(items: Any) -> dict[str, Any]:
    """A Responses API answer's output items as one assistant message (its text and tool calls)."""
    text: list[str] = []
    calls: list[Any] = []
    for message in _messages(items):
        if isinstance(message.get("content"), str) and message["content"]:
            text.append(message["content"])
        calls += message.get("tool_calls") or []
    out: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        out["tool_calls"] = calls
    return out


def responses_call(response: Any, items: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Responses API call (the ``Response`` and the input items it answered) as a chat request and
    answer: the instructions, every input item, the function tools and the settings; hosted tools,
    which no chat model runs, under ``hosted_tools`` (kept, never sent)."""
    raw = _plain(response)
    request: dict[str, Any] = {"model": raw.get("model")}
    messages = _messages(items if items is not None else [])
    instructions = raw.get("instructions")
    if isinstance(instructions, list):  # instructions given as input items
        messages = _messages(instructions) + messages
    elif isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    request["messages"] = messages
    tools = [t for t in raw.get("tools") or [] if isinstance(t, Mapping)]
    function_tools = [_chat_tool(t) for t in tools if t.get("type") == "function"]
    if function_tools:
        request["tools"] = function_tools
        if raw.get("parallel_tool_calls") is not None:
            request["parallel_tool_calls"] = raw["parallel_tool_calls"]
    hosted = [t for t in tools if t.get("type") != "function"]
    if hosted:
        request["hosted_tools"] = hosted
    request.update(_settings({**raw, "max_tokens": raw.get("max_output_tokens")}))
    text = raw.get("text")
    response_format = _chat_response_format(text.get("format") if isinstance(text, Mapping) else None)
    if response_format is not None:
        request["response_format"] = response_format
    message = _assistant(raw.get("output") or [])
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return request, _answer(message, finish, raw)


def generation_call(data: Any, sent: AgentRequest | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Chat Completions call's generation span as its request and answer. The SDK traces the
    messages and settings it sent, not the tools nor the response format: ``sent`` holds the agent's,
    when they are known."""
    config = _plain(data.model_config) or {}
    request: dict[str, Any] = {"model": data.model, "messages": _plain(list(data.input or []))}
    if sent is not None and sent.tools:
        request["tools"] = sent.tools
        if config.get("parallel_tool_calls") is not None:
            request["parallel_tool_calls"] = config["parallel_tool_calls"]
    request.update(_settings(config))
    if sent is not None and sent.response_format is not None:
        request["response_format"] = sent.response_format
    output = [o for o in _plain(list(data.output or [])) if isinstance(o, Mapping)]
    first = output[0] if output else {}
    usage = {"usage": data.usage} if isinstance(data.usage, Mapping) else {}
    if "output" in first:  # a streamed call: the SDK traces the Response it assembled
        message = _assistant(first["output"])
        return request, _answer(message, "tool_calls" if message.get("tool_calls") else "stop", {**first, **usage})
    message = {k: v for k, v in first.items() if v is not None} or {"role": "assistant", "content": None}
    return request, _answer(message, "tool_calls" if message.get("tool_calls") else "stop", usage)


def tool_output(output: Any) -> Any:
    """A tool's output as its effect holds it: what the SDK gave the model (a value not text, such as
    a dict, as the SDK's own conversion makes it, usually its ``str()``), and that as JSON data when
    the data written back (:func:`served_text`) is that very text, else as text, so that a session
    replay gives the model what the tool gave it, character for character."""
    if output is not None and not isinstance(output, str):
        from agents.items import ItemHelpers

        convert = getattr(ItemHelpers, "_convert_tool_output", None)  # the SDK's rule (private: tested here)
        output = convert(output) if callable(convert) else str(output)
    text = _plain(output)
    data = maybe_json(text)
    if isinstance(text, str) and data is not text and served_text(data) != text:
        return text
    return data


def served_text(content: Any) -> str:
    """A recorded tool result as the text a function tool returns (the inverse of :func:`tool_output`)."""
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)


def _ms(start: str | None, end: str | None) -> float | None:
    """A span's duration in milliseconds, from its ISO start and end times."""
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds() * 1000
    except ValueError:
        return None


@dataclass(frozen=True)
class AgentRequest:
    """What a Chat Completions call of an agent sends besides what the SDK traces: its tools (its
    function tools, then its handoffs) and the response format of its ``output_type``."""

    tools: list[dict[str, Any]]
    response_format: dict[str, Any] | None


def agent_requests(agents: Iterable[Any]) -> dict[str, AgentRequest]:
    """The :class:`AgentRequest` of ``agents`` and of every agent they hand off to, by agent name:
    built by the SDK's own converter, as its Chat Completions model builds them."""
    from agents import Agent, AgentOutputSchema, AgentOutputSchemaBase, FunctionTool
    from agents.handoffs import Handoff, handoff
    from agents.models.chatcmpl_converter import Converter

    found: dict[str, AgentRequest] = {}
    todo = list(agents)
    while todo:
        agent = todo.pop()
        if not isinstance(agent, Agent):
            raise SdbError(f"SdbTracingProcessor agents=: {agent!r} is not an agents.Agent")
        if agent.name in found:
            continue
        tools = [_plain(Converter.tool_to_openai(t)) for t in agent.tools if isinstance(t, FunctionTool)]
        for item in agent.handoffs:
            tools.append(_plain(Converter.convert_handoff_tool(item if isinstance(item, Handoff) else handoff(item))))
            if isinstance(item, Agent):
                todo.append(item)
        kind = agent.output_type  # as the SDK resolves it (run_internal.turn_preparation.get_output_schema)
        schema = None
        if isinstance(kind, AgentOutputSchemaBase):
            schema = kind
        elif kind is not None and kind is not str:
            schema = AgentOutputSchema(kind)
        response_format = Converter.convert_response_format(schema)
        found[agent.name] = AgentRequest(tools, _plain(response_format) if isinstance(response_format, dict) else None)
    return found


def _handoff_tool_name(agent: str) -> str:
    """The tool a model calls to hand off to ``agent`` (the SDK's default name for it)."""
    from agents.util._transforms import transform_string_function_style

    return f"transfer_to_{transform_string_function_style(agent)}"


def write_handoff(
    conversations: ConversationRecorder, session_id: str, last_step: str | None, source: str | None, target: str | None
) -> None:
    """A handoff: an action of its own (``handoff``), linked to the model's call that asked for it in
    step ``last_step``, so that it is not a step of its own for the differ (recording and session
    replay write it alike, so that their digests line up)."""
    conv = conversations.conversations.get(session_id)
    parent = None
    if conv is not None and target:
        wanted = _handoff_tool_name(target)
        for calls in conv.calls.values():
            for call in calls:
                if call.name == wanted and call.step == last_step and call.seq is not None:
                    parent = call.seq
    session = conversations.session(session_id)
    session.action("handoff", {"from_agent": source, "to_agent": target}, parent=parent, actor=source)
    conversations.actions += 1


class SdbTracingProcessor(TracingProcessor):
    """Records every trace of the OpenAI Agents SDK as one session (named by the trace id) of one run.

    ``store``: a directory or ``s3://...``; ``run_id``: generated when None (see :attr:`run_id`).
    ``agents``: the program's agents (those they hand off to are found), whose tool definitions a
    Chat Completions call's request is recorded with: the SDK does not trace them (the Responses API
    echoes them in its answer). ``shutdown()`` closes the run; the SDK calls it at exit."""

    def __init__(
        self,
        store: str | Path | None = ".sdb",
        run_id: str | None = None,
        *,
        redactor: Redactor | None = None,
        meta: Mapping[str, Any] | None = None,
        agents: Iterable[Any] = (),
    ) -> None:
        self._requests = agent_requests(agents)
        rules = redactor if redactor is not None else load_redactor()
        acting = load_actions_setting()  # a malformed config is refused before the run is created
        self.recorder = Recorder(
            store,
            {"mode": "record", "framework": "openai-agents", "redaction": rules.names, **(meta or {})},
            run_id=run_id,
            handle_signals=False,  # the agent's program owns its signals
            recorder="openai-agents",
        )
        self.run_id: str = self.recorder.run_id
        self.conversations = ConversationRecorder(self.recorder, rules, text_actions=acting.text_actions)
        self._traces: dict[str, _Trace] = {}
        self._lock = threading.Lock()  # the SDK may trace from several threads; the recorders are not shared-safe
        self._failed = False
        self._closed = False

    # -- the SDK's interface: never raises -----------------------------------------------------

    def on_trace_start(self, trace: Any) -> None:
        self._safely(self._trace_start, trace)

    def on_trace_end(self, trace: Any) -> None:
        self._safely(self._trace_end, trace)

    def on_span_start(self, span: Any) -> None:
        self._safely(self._span_start, span)

    def on_span_end(self, span: Any) -> None:
        self._safely(self._span_end, span)

    def shutdown(self) -> None:
        """Close the run (complete); later spans are not recorded."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.recorder.close()
            except Exception as exc:
                self._fail(exc)

    def force_flush(self) -> None:
        self._safely(self.recorder.flush)

    def _safely(self, fn: Any, *args: Any) -> None:
        with self._lock:
            if self._failed or self._closed:
                return
            try:
                fn(*args)
            except Exception as exc:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            log.warning("sdbctl: run %s: recording stopped: %s", self.run_id, exc)

    # -- the mapping ---------------------------------------------------------------------------

    def _trace_start(self, trace: Any) -> None:
        self._traces[trace.trace_id] = _Trace(str(trace.trace_id))

    def _trace_end(self, trace: Any) -> None:
        if self._traces.pop(trace.trace_id, None) is not None:
            self.conversations.close(str(trace.trace_id))

    def _trace(self, span: Any) -> _Trace:
        found = self._traces.get(span.trace_id)
        if found is None:  # a span of a trace that started before this processor was added
            found = self._traces[span.trace_id] = _Trace(str(span.trace_id))
        return found

    def _span_start(self, span: Any) -> None:
        trace = self._trace(span)
        trace.parents[span.span_id] = span.parent_id
        if span.span_data.type == "agent":
            trace.agents[span.span_id] = str(span.span_data.name)

    def _actor(self, trace: _Trace, span_id: str | None) -> str | None:
        """The name of the agent whose span encloses ``span_id``."""
        seen = 0
        while span_id is not None and seen < 1000:
            if span_id in trace.agents:
                return trace.agents[span_id]
            span_id, seen = trace.parents.get(span_id), seen + 1
        return None

    def _span_end(self, span: Any) -> None:
        trace = self._trace(span)
        data = span.span_data
        actor = self._actor(trace, span.parent_id)
        kind = data.type
        if kind in ("response", "generation"):
            self._model_call(trace, span, actor)
        elif kind == "function":
            self._function(trace, span, actor)
        elif kind == "handoff":
            self._handoff(trace, data.from_agent or actor, data.to_agent)
        elif kind == "guardrail":
            session = self.conversations.session(trace.session_id)
            decision = "deny" if data.triggered else "allow"
            reason = "tripwire triggered" if data.triggered else None
            session.gate(str(data.name), decision, reason, actor=actor or "agent")
        trace.parents.pop(span.span_id, None)
        trace.agents.pop(span.span_id, None)

    def _model_call(self, trace: _Trace, span: Any, actor: str | None) -> None:
        data = span.span_data
        sid = trace.session_id
        if span.error:
            detail = self.conversations.redactor.redact(_plain(span.error))
            message = str(span.error.get("message") or "model call failed")
            self.conversations.session(sid).error("chat", message, detail=detail, actor=actor)
            self.conversations.errors += 1
            return
        if data.type == "response":
            missing = data.response is None or data.input is None  # the run does not trace content
            request, answer = responses_call(data.response, data.input) if not missing else ({}, {})
            model = getattr(data.response, "model", None) if data.response is not None else None
        else:
            missing = data.input is None or data.output is None
            request, answer = generation_call(data, self._requests.get(actor or "")) if not missing else ({}, {})
            model = data.model
        usage = answer.get("usage") or {}
        self.conversations.answer(
            sid,
            request,
            answer,
            model=f"openai:{model or 'unknown'}",
            latency_ms=_ms(span.started_at, span.ended_at),
            actor=actor,
            content_missing=missing,
            tokens_in=usage.get("prompt_tokens"),
            tokens_out=usage.get("completion_tokens"),
        )
        trace.last_step = f"call-{self.conversations.conversations[sid].llm_calls:03d}"

    def _function(self, trace: _Trace, span: Any, actor: str | None) -> None:
        data = span.span_data
        failed = span.error is not None
        result = tool_output(data.output)
        if failed and result is None:  # the SDK keeps the error, not an output
            result = {"error": _plain(span.error)}
        self.conversations.tool_result(
            trace.session_id,
            None,  # the span has no call id: the oldest unanswered call of that tool is the one answered
            str(data.name),
            result,
            args=maybe_json(data.input) if data.input is not None else None,
            actor=actor,
            status="error" if failed else "ok",
        )

    def _handoff(self, trace: _Trace, source: str | None, target: str | None) -> None:
        write_handoff(self.conversations, trace.session_id, trace.last_step, source, target)

    def __repr__(self) -> str:
        return f"SdbTracingProcessor(run_id={self.run_id!r})"


# -- session mode: the agent run again, its model the replay's, its tools served from the record ----


def _usage_of(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    usage = answer.get("usage")
    return usage if isinstance(usage, Mapping) else {}


class _Replaying:
    """One replayed session: where its events go, what the replay serves, and the first exception the
    replay raised (the SDK wraps it; it is raised again as it was)."""

    def __init__(self, ctx: AgentContext, session_id: str) -> None:
        self.ctx = ctx
        self.session_id = session_id
        shim = cast("Recorder", OneSession(ctx.sink))
        acting = load_actions_setting()
        self.conversations = ConversationRecorder(shim, load_redactor(), text_actions=acting.text_actions)
        self.last_step: str | None = None
        self.raised: BaseException | None = None
        self.clones: dict[int, Any] = {}

    def fatal(self, exc: BaseException) -> BaseException:
        if self.raised is None:
            self.raised = exc
        return exc

    async def answer(self, agent: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """A model call of ``agent`` (the chat request a recording stores), answered by the replay's
        model and recorded as a recording run records it."""
        started = time.monotonic()
        try:
            completion = await self.ctx.model.complete(dict(request), seed=self.ctx.seed, repeat=self.ctx.repeat)
        except BaseException as exc:  # StopSession, ProviderError: the openai client would wrap them
            raise self.fatal(exc) from None
        answer: dict[str, Any] = completion.response
        usage = _usage_of(answer)
        self.conversations.answer(
            self.session_id,
            request,
            answer,
            model=f"openai:{request.get('model') or 'unknown'}",
            latency_ms=(time.monotonic() - started) * 1000,
            actor=agent,
            tokens_in=usage.get("prompt_tokens"),
            tokens_out=usage.get("completion_tokens"),
        )
        self.last_step = f"call-{self.conversations.conversations[self.session_id].llm_calls:03d}"
        return answer

    async def chat(self, agent: str, sent: httpx2.Request) -> httpx2.Response:
        """A Chat Completions call: the body the SDK sent is the request a recording stores."""
        body = json.loads(sent.content)
        answer = await self.answer(agent, body)
        full = {"id": "chatcmpl-replay", "object": "chat.completion", "created": 0, "model": body.get("model")}
        return httpx2.Response(200, json={**full, **answer})

    async def responses(self, agent: str, sent: httpx2.Request) -> httpx2.Response:
        """A Responses API call: the request a recording stores is made from the Response the API
        echoes (its request's instructions, tools and settings; tool choice and parallel tool calls by
        their defaults when unset) by the recorder's own :func:`responses_call`; the chat answer is
        given back as output items."""
        body = json.loads(sent.content)
        echo = {
            k: body.get(k)
            for k in ("model", "instructions", "tools", "temperature", "top_p", "max_output_tokens", "text")
        }
        echo.update(
            tool_choice=body.get("tool_choice", "auto"), parallel_tool_calls=body.get("parallel_tool_calls", True)
        )
        request, _ = responses_call(echo, body.get("input"))
        answer = await self.answer(agent, request)
        message = (answer.get("choices") or [{}])[0].get("message") or {}
        output: list[dict[str, Any]] = []
        if message.get("content"):
            text = {"type": "output_text", "text": message["content"], "annotations": []}
            output.append(
                {"type": "message", "id": "msg_0", "role": "assistant", "status": "completed", "content": [text]}
            )
        for n, call in enumerate(message.get("tool_calls") or []):
            fn = call["function"]
            output.append(
                {"type": "function_call", "id": f"fc_{n}", "call_id": call["id"], "name": fn["name"],
                 "arguments": fn["arguments"], "status": "completed"}
            )  # fmt: skip
        usage = _usage_of(answer)
        tokens = {"input_tokens": usage.get("prompt_tokens") or 0, "output_tokens": usage.get("completion_tokens") or 0}
        response = {
            **echo,
            "id": str(answer.get("id") or "resp_replay"),
            "object": "response",
            "created_at": 0,
            "status": "completed",
            "output": output,
            "tools": body.get("tools") or [],
            "usage": {
                **tokens,
                "total_tokens": tokens["input_tokens"] + tokens["output_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        return httpx2.Response(200, json=response)

    def model(self, agent: Any) -> Any:
        """The agent's model, its API kept (Responses, else Chat Completions), every call of which
        :meth:`answer` answers."""
        from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel
        from openai import AsyncOpenAI

        name = agent.model if isinstance(agent.model, str) else getattr(agent.model, "model", None)
        responses = isinstance(agent.model, OpenAIResponsesModel)

        async def handle(sent: httpx2.Request) -> httpx2.Response:
            return await (self.responses if responses else self.chat)(str(agent.name), sent)

        client = AsyncOpenAI(
            api_key="unused",
            base_url="http://sdbctl-replay.invalid/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)),
        )
        kind = OpenAIResponsesModel if responses else OpenAIChatCompletionsModel
        return kind(model=str(name or "unknown"), openai_client=client)

    def tool(self, agent: str, tool: Any) -> Any:
        """A function tool served its recorded result for a call identical to a recorded one (recorded
        as its effect); a call with none stops the session."""
        original = tool.on_invoke_tool
        commit = self.ctx.commit

        async def invoke(context: Any, text: str) -> Any:
            if not callable(commit):  # not a replay: the tool runs
                return await original(context, text)
            args = maybe_json(text) if text else {}
            args = args if isinstance(args, dict) else {"(arguments)": args}
            call_id = getattr(context, "tool_call_id", None)
            try:
                served = commit(ValidAction(tool.name, args, digest(tool.name, canonical_bytes(args)), call_id))
            except BaseException as exc:  # StopSession: the SDK would make it a UserError
                raise self.fatal(exc) from None
            if served is EXECUTE:  # --on-divergence continue, a pure tool: it runs
                output = await original(context, text)
                content: Any = tool_output(output)
            else:
                output = None
                content = served.get("content") if isinstance(served, Mapping) else served
            self.conversations.tool_result(self.session_id, call_id, tool.name, content, actor=agent)
            if output is not None:
                return output
            return served_text(content)

        return dataclasses.replace(tool, on_invoke_tool=invoke)

    def guardrail(self, agent: str, guardrail: Any) -> Any:
        """A guardrail (input or output) that runs as the agent's, its verdict recorded as the processor
        records it."""
        check = guardrail.guardrail_function
        name = guardrail.get_name()

        async def run(context: Any, of: Any, given: Any) -> Any:
            out = check(context, of, given)
            out = await out if inspect.isawaitable(out) else out
            triggered = bool(out.tripwire_triggered)
            reason = "tripwire triggered" if triggered else None
            self.conversations.session(self.session_id).gate(
                name, "deny" if triggered else "allow", reason, actor=agent
            )
            return out

        return dataclasses.replace(guardrail, guardrail_function=run, name=name)

    def clone(self, agent: Any) -> Any:
        """``agent`` (and every agent it hands off to) with its model, function tools and guardrails
        replaced as above."""
        from agents import Agent, FunctionTool
        from agents.handoffs import Handoff

        if id(agent) in self.clones:
            return self.clones[id(agent)]
        name = str(agent.name)
        tools = [self.tool(name, t) if isinstance(t, FunctionTool) else t for t in agent.tools]
        made = self.clones[id(agent)] = agent.clone(
            model=self.model(agent),
            tools=tools,
            input_guardrails=[self.guardrail(name, g) for g in agent.input_guardrails],
            output_guardrails=[self.guardrail(name, g) for g in agent.output_guardrails],
        )
        handoffs: list[Any] = []
        for item in agent.handoffs:
            if isinstance(item, Agent):
                handoffs.append(self.clone(item))
            elif isinstance(item, Handoff):
                handoffs.append(dataclasses.replace(item, on_invoke_handoff=self._handing_off(item.on_invoke_handoff)))
            else:
                handoffs.append(item)
        made.handoffs = handoffs
        return made

    def _handing_off(self, invoke: Callable[[Any, str], Awaitable[Any]]) -> Callable[[Any, str], Awaitable[Any]]:
        async def to_clone(context: Any, text: str) -> Any:
            return self.clone(await invoke(context, text))

        return to_clone


class _Handoffs(RunHooks[Any]):
    """Writes each handoff as the recorder writes it (see :func:`write_handoff`)."""

    def __init__(self, state: _Replaying) -> None:
        self.state = state

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        state = self.state
        write_handoff(state.conversations, state.session_id, state.last_step, from_agent.name, to_agent.name)


class OpenAIAgentsAgent(RecordedInputs):
    """An OpenAI Agents SDK agent as sdbctl runs it: ``agent`` is the entry agent, ``inputs`` what each
    session is run with, by session id (the trace id the recording named: ``RunConfig(trace_id=...)``).
    ``sdbctl replay RUN --mode session --agent FILE.py:ATTR`` runs it again under the replay's model
    (every agent's model, through Chat Completions; tracing off), serving recorded tool results for
    identical function tool calls and stopping at the first call with none."""

    description = "an OpenAI Agents SDK agent"
    patterns: tuple[str, ...] = ()

    def __init__(
        self,
        agent: Any,
        inputs: Mapping[str, Any],
        *,
        name: str = "openai-agents",
        baseline_model: str = "",
        max_turns: int = 10,
    ) -> None:
        from agents import Agent

        if not isinstance(agent, Agent):
            raise SdbError(f"OpenAIAgentsAgent: {agent!r} is not an agents.Agent")
        self.agent = agent
        self.inputs = dict(inputs)
        self.name = name
        self.baseline_model = baseline_model
        self.max_turns = max_turns
        self.prompts = PromptLibrary(Path(__file__).parent / "no-prompts")  # an agent's prompts are its own

    async def run_session(self, ctx: AgentContext, item: SessionItem) -> str:
        """Run the agent on the session's input, recorded into the replay's session as the tracing
        processor records a run (so that a replay with the recorded answers reads the same events)."""
        from agents import InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered, RunConfig, Runner

        state = _Replaying(ctx, item.session_id)
        config = RunConfig(tracing_disabled=True)
        try:
            result = await Runner.run(
                state.clone(self.agent), item.data, run_config=config, hooks=_Handoffs(state), max_turns=self.max_turns
            )
        except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered):
            if state.raised is not None:
                raise state.raised from None
            return "refused"
        except Exception:
            if state.raised is not None:  # the replay's StopSession or ProviderError, as it was raised
                raise state.raised from None
            raise
        return "finished" if result.final_output is not None else "no output"
