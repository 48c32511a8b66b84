"""LangChain and LangGraph agents recorded from inside: a callback handler that writes a run.

Two lines in the agent program::

    from sdbctl.recorders.langchain import SdbCallbackHandler

    with SdbCallbackHandler(store=".sdb") as handler:
        graph.invoke(inputs, config={"callbacks": [handler], "configurable": {"thread_id": "t-1"}})

Each chat-model call is an ``llm`` event whose request is the call in the OpenAI chat shape (its
messages, the tools bound to the model, its parameters) and whose response is the answer as a
``chat.completion``; the actions are derived from that answer by the boundary rules every other
recorder uses (:class:`ConversationRecorder`), so a ``recorded`` step replay reads the same actions.
A tool run is the ``effect`` of the call it answers (a tool that raised: status ``error``). LangGraph's
node is each event's ``actor``, and its super-step is in the ``step`` of the llm event and of the
actions and effects of its calls: ``call-NNN/NODE/sK``. One session per thread id (else per root run).

The handler prints nothing and never raises into the agent: a recording failure is logged once and
the agent goes on. LangChain is imported here only, when this module is.

:class:`LangGraphAgent` makes a graph a workload that ``replay --mode session --agent`` runs again:
its model answered by the replay's, its tool calls served their recorded results through
``ToolNode(wrap_tool_call=...)``, recorded by this same handler so that both runs read alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from sdbctl.recorders.conversation import ConversationRecorder, OneSession, RecordedInputs, maybe_json
from sdbctl.sdb.agents import AgentContext, SessionItem
from sdbctl.sdb.boundary import EXECUTE, ValidAction, load_actions_setting
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import EventSink, canonical_bytes, digest
from sdbctl.sdb.prompts import PromptLibrary
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.store import Store

try:
    from langchain_core.callbacks import (
        AsyncCallbackHandler,
        AsyncCallbackManagerForLLMRun,
        BaseCallbackHandler,
        CallbackManagerForLLMRun,
    )
    from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        ToolMessage,
        convert_to_messages,
        convert_to_openai_messages,
    )
    from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
    from langchain_core.runnables import Runnable
    from pydantic import ConfigDict
except ImportError as exc:  # LangChain is an optional extra: say how to get it, in one line
    raise SdbError("sdbctl.recorders.langchain needs LangChain: pip install 'sdbctl[langchain]'") from exc

__all__ = ["AsyncSdbCallbackHandler", "LangGraphAgent", "SdbCallbackHandler"]

log = logging.getLogger(__name__)

# the chat-completions request fields a chat model's invocation parameters may hold: the model's
# transport (base URL, key, timeouts, streaming) is never part of the request
_REQUEST_FIELDS: Final = (
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "response_format",
    "reasoning_effort",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
)


@dataclass
class _Call:
    """A chat-model call between its start and its end."""

    session: str
    request: dict[str, Any]
    model: str
    actor: str | None
    where: str  # the LangGraph part of the step, "/NODE/sK" (empty outside a graph)
    started: float


@dataclass
class _Tool:
    """A tool run between its start and its end."""

    session: str
    name: str
    call_id: str | None
    args: Any
    actor: str | None
    parent: uuid.UUID | None  # the run that ran it (a graph's tool node)


def _graph_place(metadata: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """LangGraph's node (the actor) and the step suffix ``/NODE/sK`` from a run's metadata."""
    node = (metadata or {}).get("langgraph_node")
    step = (metadata or {}).get("langgraph_step")
    if not isinstance(node, str):
        return None, ""
    return node, f"/{node}" + (f"/s{step}" if isinstance(step, int) else "")


def _request(messages: Sequence[BaseMessage], params: Mapping[str, Any], model: str | None) -> dict[str, Any]:
    """The call as a chat-completions request: its messages in the OpenAI shape, then the fields of
    :data:`_REQUEST_FIELDS` the invocation parameters set (bound tools are already OpenAI tools JSON)."""
    request: dict[str, Any] = {"model": model} if model else {}
    for key in _REQUEST_FIELDS:
        value = params.get(key)
        if value is not None and key not in request:
            request[key] = value
    request["messages"] = convert_to_openai_messages(list(messages))
    return request


def _model_name(metadata: Mapping[str, Any] | None, params: Mapping[str, Any]) -> tuple[str | None, str]:
    """The model name as asked, and as recorded: ``PROVIDER:NAME`` (``openai:gpt-4o-mini``) when the
    model says its provider, as the recording proxy records it."""
    meta = metadata or {}
    name = params.get("model") or params.get("model_name") or meta.get("ls_model_name")
    name = str(name) if name else None
    provider = meta.get("ls_provider")
    shown = name or str(params.get("_type") or "unknown")
    return name, f"{provider}:{shown}" if isinstance(provider, str) and provider else shown


def _usage(message: BaseMessage, llm_output: Mapping[str, Any] | None) -> dict[str, int] | None:
    usage = getattr(message, "usage_metadata", None)
    if isinstance(usage, Mapping) and "input_tokens" in usage:
        return {
            "prompt_tokens": int(usage["input_tokens"]),
            "completion_tokens": int(usage.get("output_tokens", 0)),
            "total_tokens": int(usage.get("total_tokens", 0)),
        }
    token_usage = (llm_output or {}).get("token_usage")
    if isinstance(token_usage, Mapping):
        return {k: int(v) for k, v in token_usage.items() if isinstance(v, int)}
    return None


def _response(result: LLMResult, asked: str | None) -> dict[str, Any]:
    """The answer as a ``chat.completion``: each generation's message in the OpenAI shape (tool calls
    with their arguments as JSON text), its finish reason, the usage."""
    choices: list[dict[str, Any]] = []
    first: BaseMessage | None = None
    for index, generation in enumerate(result.generations[0] if result.generations else []):
        if isinstance(generation, ChatGeneration):
            message = generation.message
            first = first or message
            openai_message = convert_to_openai_messages(message)
        else:  # a text completion model's generation
            openai_message = {"role": "assistant", "content": generation.text}
        info = generation.generation_info or {}
        meta = getattr(generation, "message", None)
        finish = info.get("finish_reason") or (meta.response_metadata.get("finish_reason") if meta else None)
        if finish is None:
            finish = "tool_calls" if openai_message.get("tool_calls") else "stop"
        choices.append({"index": index, "message": openai_message, "finish_reason": finish})
    meta_of_first = first.response_metadata if first is not None else {}
    response: dict[str, Any] = {
        "object": "chat.completion",
        "model": meta_of_first.get("model_name") or (result.llm_output or {}).get("model_name") or asked,
        "choices": choices,
    }
    if meta_of_first.get("id"):
        response["id"] = meta_of_first["id"]
    usage = _usage(first, result.llm_output) if first is not None else None
    if usage:
        response["usage"] = usage
    return response


def _plain(value: Any) -> Any:
    """A graph's input as JSON: its messages in the OpenAI shape, other values as they are when JSON,
    else as text."""
    if isinstance(value, BaseMessage):
        return convert_to_openai_messages(value)
    if isinstance(value, Mapping):
        return {str(k): _messages_or_plain(v) if k == "messages" else _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _messages_or_plain(value: Any) -> Any:
    """A state's ``messages`` (message objects, ``(role, text)`` pairs, dicts) in the OpenAI shape."""
    try:
        return convert_to_openai_messages(value)
    except (TypeError, ValueError, NotImplementedError):
        return _plain(value)


def _tool_messages(value: Any, depth: int = 0) -> Iterator[ToolMessage]:
    """The ``ToolMessage``s in a node's output (``{"messages": [...]}``, a list, a ``Command``'s update)."""
    if isinstance(value, ToolMessage):
        yield value
        return
    if depth >= 4:
        return
    if isinstance(value, Mapping):
        items: list[Any] = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [getattr(value, "update", None)]  # a Command (any other object: nothing)
    for item in items:
        yield from _tool_messages(item, depth + 1)


def _tool_output(output: Any) -> tuple[Any, str]:
    """What a tool returned, as it returned it (text stays text: a session-mode replay serves it back
    to the model byte for byte), and its status: a ``ToolMessage`` with status ``error`` (a tool node
    that caught the exception) is a failure."""
    if isinstance(output, ToolMessage):
        return output.content, "error" if output.status == "error" else "ok"
    if isinstance(output, BaseMessage):
        return output.content, "ok"
    try:
        json.dumps(output)
    except (TypeError, ValueError):
        return str(output), "ok"
    return output, "ok"


class _Recording:
    """The recording behind both handlers: LangChain's runs turned into sessions and events.

    Callbacks of one graph come from several threads (parallel tool runs) or, inline, from the event
    loop: one lock keeps a session's events in the order they happened."""

    def __init__(self, recorder: Recorder | None, conversations: ConversationRecorder) -> None:
        self.recorder = recorder  # the run this recording owns and closes (None: a replay's session sink)
        self.conversations = conversations
        self.lock = threading.RLock()
        self.sessions: dict[uuid.UUID, str] = {}  # run id -> its session (children inherit it)
        self.roots: dict[uuid.UUID, str] = {}  # root run ids whose session is the root run itself
        self.calls: dict[uuid.UUID, _Call] = {}
        self.tools: dict[uuid.UUID, _Tool] = {}
        # tools that raised, by the run that ran them, with the exception's text: the model is given what
        # that run (a tool node) made of the exception, which only its output says (see chain_end)
        self.raised: dict[uuid.UUID, list[tuple[_Tool, str]]] = {}
        self.counts: dict[str, int] = {}  # session -> its llm calls so far
        self.failed = False
        self.closed = False

    @classmethod
    def open(
        cls, store: str | os.PathLike[str] | Store | None, run_id: str | None, meta: Mapping[str, Any] | None
    ) -> _Recording:
        """A recording into a new run of ``store``, with the project's redaction and actions setting."""
        redactor = load_redactor()
        acting = load_actions_setting()
        recorder = Recorder(
            store if store is not None else ".sdb",
            {"mode": "record", "via": "langchain", "redaction": redactor.names, **(meta or {})},
            run_id=run_id,
            handle_signals=threading.current_thread() is threading.main_thread(),
            recorder="langchain",
        )
        return cls(recorder, ConversationRecorder(recorder, redactor, text_actions=acting.text_actions))

    @classmethod
    def into(cls, sink: EventSink) -> _Recording:
        """A recording into one session's sink (a session-mode replay's), as a recording run writes it."""
        shim = cast("Recorder", OneSession(sink))
        return cls(None, ConversationRecorder(shim, load_redactor(), text_actions=load_actions_setting().text_actions))

    def guarded(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Run ``fn`` under the lock; a failure is logged once, never raised into the agent."""
        if self.closed:
            return
        try:
            with self.lock:
                fn(*args, **kwargs)
        except Exception as exc:
            if not self.failed:
                self.failed = True
                log.warning(
                    "sdbctl: recording a LangChain %s failed (%s: %s); the agent goes on", what, type(exc).__name__, exc
                )

    def session_of(self, run_id: uuid.UUID, parent: uuid.UUID | None, metadata: Mapping[str, Any] | None) -> str:
        """A run's session: its thread id, else its parent's session, else its root run's id."""
        known = self.sessions.get(run_id)
        if known is not None:
            return known
        thread = (metadata or {}).get("thread_id")
        if isinstance(thread, (str, int)) and not isinstance(thread, bool):
            sid = str(thread)
        elif parent is not None:
            sid = self.sessions.get(parent) or str(parent)
        else:
            sid = str(run_id)
            self.roots[run_id] = sid
        self.sessions[run_id] = sid
        return sid

    def ended(self, run_id: uuid.UUID) -> None:
        """A run is over: a model or tool called on its own (a root run, no chain around it) was a
        session of its own, closed now."""
        sid = self.sessions.pop(run_id, None)
        if self.roots.pop(run_id, None) is not None and sid is not None:
            self.conversations.close(sid)
            self.counts.pop(sid, None)

    # -- the events ------------------------------------------------------------------------------

    def chain_start(
        self, inputs: Any, run_id: uuid.UUID, parent: uuid.UUID | None, metadata: Mapping[str, Any] | None
    ) -> None:
        """A root run (a graph invoked) records what it was invoked with: the session's ``input``, what
        a session-mode replay would run the agent on again."""
        sid = self.session_of(run_id, parent, metadata)
        if parent is None:
            payload = self.conversations.redactor.redact(_plain(inputs))
            self.conversations.session(sid).input("invoke", payload)

    def chain_end(self, run_id: uuid.UUID, parent: uuid.UUID | None, outputs: Any = None) -> None:
        """A run is over: the tools it ran that raised get their effects, with the text its output
        gave the model for each (a tool node's ``ToolMessage``, e.g. ``Error: ValueError(...)``), else
        the exception's. A root run is over: what was kept for its runs is let go, and a session named
        after the root run is closed (a thread's session stays open: the thread may be invoked again)."""
        raised = self.raised.pop(run_id, [])
        if raised:
            given = {m.tool_call_id: m for m in _tool_messages(outputs)}
            for tool, text in raised:
                message = given.get(tool.call_id or "")
                self._tool_result(tool, message.content if message is not None else text, "error")
        if parent is not None:
            self.sessions.pop(run_id, None)
            return
        sid = self.sessions.get(run_id)
        for child in [k for k, v in self.sessions.items() if v == sid and k != run_id]:
            del self.sessions[child]
        self.ended(run_id)

    def chat_start(
        self,
        messages: list[list[BaseMessage]],
        run_id: uuid.UUID,
        parent: uuid.UUID | None,
        metadata: Mapping[str, Any] | None,
        params: Mapping[str, Any],
    ) -> None:
        sid = self.session_of(run_id, parent, metadata)
        asked, model = _model_name(metadata, params)
        actor, where = _graph_place(metadata)
        request = _request(messages[0] if messages else [], params, asked)
        self.calls[run_id] = _Call(sid, request, model, actor, where, time.perf_counter())

    def llm_end(self, result: LLMResult, run_id: uuid.UUID) -> None:
        call = self.calls.pop(run_id, None)
        if call is None:
            return
        n = self.counts[call.session] = self.counts.get(call.session, 0) + 1
        self.conversations.answer(
            call.session,
            call.request,
            _response(result, call.request.get("model")),
            model=call.model,
            latency_ms=(time.perf_counter() - call.started) * 1000,
            actor=call.actor,
            step=f"call-{n:03d}{call.where}",
        )
        self.ended(run_id)

    def llm_error(self, error: BaseException, run_id: uuid.UUID) -> None:
        call = self.calls.pop(run_id, None)
        if call is not None:
            body = {"error": f"{type(error).__name__}: {error}"}
            self.conversations.failure(call.session, call.request, None, body, actor=call.actor)
        self.ended(run_id)

    def tool_start(
        self,
        name: str,
        run_id: uuid.UUID,
        parent: uuid.UUID | None,
        metadata: Mapping[str, Any] | None,
        call_id: Any,
        args: Any,
    ) -> None:
        sid = self.session_of(run_id, parent, metadata)
        actor, _ = _graph_place(metadata)
        self.tools[run_id] = _Tool(sid, name, call_id if isinstance(call_id, str) else None, args, actor, parent)

    def tool_end(self, output: Any, run_id: uuid.UUID, *, error: BaseException | None = None) -> None:
        tool = self.tools.pop(run_id, None)
        if tool is None:
            return
        if error is not None and tool.parent is not None:  # its effect waits for what the model is given
            self.raised.setdefault(tool.parent, []).append((tool, f"{type(error).__name__}: {error}"))
        elif error is not None:
            self._tool_result(tool, f"{type(error).__name__}: {error}", "error")
        else:
            result, status = _tool_output(output)
            if tool.call_id is None and isinstance(output, ToolMessage):
                tool = dataclasses.replace(tool, call_id=output.tool_call_id)
            self._tool_result(tool, result, status)
        self.ended(run_id)

    def _tool_result(self, tool: _Tool, result: Any, status: str) -> None:
        self.conversations.tool_result(
            tool.session, tool.call_id, tool.name, result, args=tool.args, actor=tool.actor, status=status
        )

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            for raised in self.raised.values():  # runs that never ended: the exception's text
                for tool, text in raised:
                    self.guarded("tool error", self._tool_result, tool, text, "error")
            self.raised.clear()
            self.closed = True
        try:
            if self.recorder is not None:
                self.recorder.close()
        except Exception as exc:
            log.warning("sdbctl: closing the LangChain recording failed (%s: %s)", type(exc).__name__, exc)


class _Handler:
    """What both handlers share: the recording, its run id, ``close`` and the context manager."""

    _rec: _Recording

    @property
    def run_id(self) -> str | None:
        """The run this handler records into."""
        return self._rec.recorder.run_id if self._rec.recorder is not None else None

    def close(self) -> None:
        """Flush what is recorded and close the run (idempotent; never raises)."""
        self._rec.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tool_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name") or (serialized or {}).get("name")
    return str(name) if name else "tool"


class SdbCallbackHandler(_Handler, BaseCallbackHandler):
    """Records a LangChain or LangGraph agent into a run of ``store`` (a path or ``s3://...``; the run
    id is generated when None). Pass it in ``config={"callbacks": [handler]}``; ``close()`` (or
    leaving its ``with`` block) closes the run. It runs inline, so it serves ``ainvoke`` too, in order."""

    run_inline = True
    raise_error = False

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = ".sdb",
        run_id: str | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self._rec = _Recording.open(store, run_id, meta)

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._rec.guarded("chain", self._rec.chain_start, inputs, run_id, parent_run_id, metadata)

    def on_chain_end(
        self, outputs: dict[str, Any], *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        self._rec.guarded("chain", self._rec.chain_end, run_id, parent_run_id, outputs)

    def on_chain_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        self._rec.guarded("chain", self._rec.chain_end, run_id, parent_run_id)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        self._rec.guarded("model call", self._rec.chat_start, messages, run_id, parent_run_id, metadata, params)

    def on_llm_end(
        self, response: LLMResult, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        self._rec.guarded("model answer", self._rec.llm_end, response, run_id)

    def on_llm_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        self._rec.guarded("model error", self._rec.llm_error, error, run_id)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = _tool_name(serialized, kwargs)
        args = inputs if inputs is not None else maybe_json(input_str)
        call_id = kwargs.get("tool_call_id")
        self._rec.guarded("tool run", self._rec.tool_start, name, run_id, parent_run_id, metadata, call_id, args)

    def on_tool_end(
        self, output: Any, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        self._rec.guarded("tool result", self._rec.tool_end, output, run_id)

    def on_tool_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **kwargs: Any
    ) -> None:
        self._rec.guarded("tool error", self._rec.tool_end, None, run_id, error=error)


class AsyncSdbCallbackHandler(_Handler, AsyncCallbackHandler):
    """:class:`SdbCallbackHandler` as LangChain's async handler, for code that asks for one; recording
    costs a queue append, so its methods do not await anything."""

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = ".sdb",
        run_id: str | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self._sync = SdbCallbackHandler(store, run_id, meta=meta)
        self._rec = self._sync._rec

    async def on_chain_start(
        self, serialized: dict[str, Any], inputs: dict[str, Any], *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        self._sync.on_chain_start(serialized, inputs, run_id=run_id, **kwargs)

    async def on_chain_end(self, outputs: dict[str, Any], *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._sync.on_chain_end(outputs, run_id=run_id, **kwargs)

    async def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._sync.on_chain_error(error, run_id=run_id, **kwargs)

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        self._sync.on_chat_model_start(serialized, messages, run_id=run_id, **kwargs)

    async def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._sync.on_llm_end(response, run_id=run_id, **kwargs)

    async def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._sync.on_llm_error(error, run_id=run_id, **kwargs)

    async def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        self._sync.on_tool_start(serialized, input_str, run_id=run_id, **kwargs)

    async def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._sync.on_tool_end(output, run_id=run_id, **kwargs)

    async def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._sync.on_tool_error(error, run_id=run_id, **kwargs)


# -- session mode: the graph run again, its model the replay's, its tools served from the record ----


class _ReplayChatModel(BaseChatModel):
    """The agent's chat model as a session-mode replay asks it: the agent's own invocation parameters
    (so the request is the one the recording stored, built by :func:`_request`), answered by the
    replay's model (the recorded answers, or the candidate)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    inner: BaseChatModel
    provider: Any
    loop: Any  # the replay's event loop, where its model is asked (a sync node asks from a worker thread)

    @property
    def _llm_type(self) -> str:
        return self.inner._llm_type

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        return self.inner._get_invocation_params(stop=stop, **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.inner._get_ls_params(stop=stop, **kwargs)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """The tools bound as the agent's own model binds them (OpenAI tools JSON, its tool choice)."""
        bound = self.inner.bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        try:
            inside = asyncio.get_running_loop() is self.loop
        except RuntimeError:  # no loop in this thread: a sync node, run by LangGraph in a worker thread
            inside = False
        if inside:
            raise RuntimeError("a chat model called synchronously inside the event loop: use ainvoke")
        return asyncio.run_coroutine_threadsafe(self._agenerate(messages, stop, **kwargs), self.loop).result()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params = self._get_invocation_params(stop=stop, **kwargs)
        completion = await self.provider.complete(_request(messages, params, _model_name(None, params)[0]))
        response = completion.response
        choice = response["choices"][0]
        message = choice.get("message") or {}
        calls = message.get("tool_calls")
        (answer,) = convert_to_messages(
            [{"role": "assistant", "content": message.get("content") or "", **({"tool_calls": calls} if calls else {})}]
        )
        answer.response_metadata = {"model_name": response.get("model"), "finish_reason": choice.get("finish_reason")}
        return ChatResult(
            generations=[
                ChatGeneration(message=answer, generation_info={"finish_reason": choice.get("finish_reason")})
            ],
            llm_output={"model_name": response.get("model")},
        )


ToolCallWrapper = Callable[[Any, Callable[[Any], Any]], Any]


def _served_tools(ctx: AgentContext, rec: _Recording, session_id: str) -> ToolCallWrapper:
    """The hook into LangGraph's tool execution (``ToolNode(wrap_tool_call=...)``): a tool call
    identical (same digest) to a recorded one gets the recorded result, recorded as its effect; one
    with none stops the session (:class:`StopSession`, raised by the replay's ``commit``)."""

    def wrap(request: Any, execute: Callable[[Any], Any]) -> Any:
        commit = ctx.commit
        if not callable(commit):  # recording, not replaying: the tool runs
            return execute(request)
        call = request.tool_call
        args = dict(call["args"])
        served = commit(ValidAction(call["name"], args, digest(call["name"], canonical_bytes(args)), call.get("id")))
        if served is EXECUTE:  # --on-divergence continue, a pure tool: it runs
            return execute(request)
        content = served.get("content") if isinstance(served, Mapping) else served
        config = getattr(getattr(request, "runtime", None), "config", None) or {}
        node, _ = _graph_place(config.get("metadata"))
        rec.guarded(
            "served tool result",
            rec.conversations.tool_result,
            session_id,
            call.get("id"),
            call["name"],
            content,
            actor=node,
        )
        text = content if isinstance(content, (str, list)) else json.dumps(content)
        return ToolMessage(text, tool_call_id=call["id"], name=call["name"])

    return wrap


class LangGraphAgent(RecordedInputs):
    """A LangGraph agent as sdbctl runs it: ``build(model, wrap_tool_call)`` makes the graph (pass
    ``wrap_tool_call`` to its ``ToolNode``), ``model`` is the agent's chat model, ``inputs`` what each
    session (thread id) is invoked with. ``graph()`` is the graph as the agent runs it;
    ``sdbctl replay RUN --mode session --agent FILE.py:ATTR`` runs it again under the replay's model,
    serving recorded tool results for identical tool calls and stopping at the first call with none."""

    description = "a LangGraph agent"
    patterns: tuple[str, ...] = ()

    def __init__(
        self,
        build: Callable[[BaseChatModel, ToolCallWrapper | None], Any],
        model: BaseChatModel,
        inputs: Mapping[str, Any],
        *,
        name: str = "langgraph",
        baseline_model: str = "",
    ) -> None:
        self.build = build
        self.model = model
        self.inputs = dict(inputs)
        self.name = name
        self.baseline_model = baseline_model
        self.prompts = PromptLibrary(Path(__file__).parent / "no-prompts")  # a graph's prompts are its own

    def graph(self) -> Any:
        """The graph as the agent runs it: its own model, its tools executed."""
        return self.build(self.model, None)

    async def run_session(self, ctx: AgentContext, item: SessionItem) -> str:
        """Invoke the graph on the session's input, recorded into the replay's session as a recording
        run records it (so that a replay with the recorded answers reads the same events)."""
        rec = _Recording.into(ctx.sink)
        handler = SdbCallbackHandler.__new__(SdbCallbackHandler)
        handler._rec = rec
        model = _ReplayChatModel(inner=self.model, provider=ctx.model, loop=asyncio.get_running_loop())
        graph = self.build(model, _served_tools(ctx, rec, item.session_id))
        config: Any = {"callbacks": [handler], "configurable": {"thread_id": item.session_id}}
        await graph.ainvoke(item.data, config=config)
        return "finished"
