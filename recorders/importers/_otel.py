"""``sdbctl import otel FILE...``: OpenTelemetry GenAI traces (OTLP/JSON) as a run.

A trace is a session. Spans are taken in start order (a parent before its children when they start
together): an inference span (``gen_ai.operation.name`` = chat / text_completion / generate_content,
or the older attributes) becomes an ``llm`` event and the actions in its answer; the tool results its
request carries, and ``execute_tool`` spans, become ``effect`` events linked to their call; an
``invoke_agent`` span becomes an ``input`` event and names the actor of the spans below it. Parentage
gives ``parent``; of two nested inference spans (ADK's ``call_llm`` around ``generate_content``) only
one is imported, the one holding the content. A span recorded without content still imports, marked
``content: missing``, and a step-mode replay skips it. Other spans (HTTP, database, ...) are ignored
and counted.

All or nothing: every file is read and checked before the run is created; a bad line or span is a
one-line ``FILE:LINE: what is wrong``. Content held as JSON text inside an attribute (messages, tool
arguments) is parsed only when canonical JSON keeps it as it is, else kept as the text it is; a span
whose content still cannot be written (a tool call's arguments nested too deep, or holding NaN, as
the boundary reads them) stops the import at that span's ``FILE:LINE``, also under ``skip_bad``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from sdbctl.recorders.conversation import ConversationRecorder
from sdbctl.recorders.importers._genai import inference, model_spec, operation, tokens, tool_call
from sdbctl.recorders.importers._otlp import Span, read_spans
from sdbctl.recorders.importers._summary import ImportSummary
from sdbctl.sdb.boundary import load_actions_setting
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import Redactor, load_redactor


def _ordered(spans: list[Span]) -> list[Span]:
    """Start order; at equal starts a parent before its child, then input order."""
    by_id = {s.span_id: s for s in spans}

    def depth(span: Span) -> int:
        n, seen = 0, set()
        while span.parent_id in by_id and span.parent_id not in seen:
            seen.add(span.parent_id)
            span = by_id[span.parent_id]
            n += 1
        return n

    return sorted(spans, key=lambda s: (s.start_ns, depth(s), s.order))


def _nearest(span: Span, by_id: dict[str, Span], found: dict[str, Any]) -> Any:
    """The value ``found`` holds for the closest ancestor of ``span`` that has one."""
    seen: set[str] = set()
    parent = span.parent_id
    while parent is not None and parent not in seen:
        seen.add(parent)
        if parent in found:
            return found[parent]
        ancestor = by_id.get(parent)
        parent = ancestor.parent_id if ancestor is not None else None
    return None


def _doubles(members: list[Span], by_id: dict[str, Span]) -> set[str]:
    """The inference spans that repeat another: a model call inside another one is the same call seen
    twice (ADK's ``call_llm`` around its ``generate_content``, a framework's span around an instrumented
    client's). The one holding the content is kept; the outer one when both or neither do."""
    calls = {s.span_id: s for s in members if operation(s) == "chat"}
    dropped: set[str] = set()
    for span in calls.values():
        outer = _nearest(span, by_id, calls)
        if outer is not None:
            inner_only = inference(span)[2] and not inference(outer)[2]
            dropped.add(outer.span_id if inner_only else span.span_id)
    return dropped


def import_otel(
    store: str | Path | None,
    paths: list[Path],
    *,
    run_id: str | None = None,
    skip_bad: bool = False,
    redactor: Redactor | None = None,
) -> ImportSummary:
    """Import the GenAI spans of ``paths`` into a new run; nothing is written unless all input is good
    (or ``skip_bad``)."""
    if not paths:
        raise SdbError("import otel: no FILE given")
    rules = redactor if redactor is not None else load_redactor()
    acting = load_actions_setting()  # a malformed config is refused before the run is created
    spans, bad = read_spans(paths, skip_bad=skip_bad)
    wanted = [s for s in spans if operation(s) is not None]
    if not wanted:
        raise SdbError(f"{paths[0]}: no GenAI spans to import ({len(spans)} spans read, none gen_ai)")
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:  # every span, so that parentage crosses non-GenAI spans
        traces[span.trace_id].append(span)
    clock = [0]
    recorder = Recorder(
        store,
        {
            "mode": "record",
            "imported_from": [str(p) for p in paths],
            "redaction": rules.names,
            "skipped": bad,
            "ignored_spans": len(spans) - len(wanted),
        },
        run_id=run_id,
        handle_signals=False,
        recorder="otel",
        clock=lambda: clock[0],
    )
    conversations = ConversationRecorder(recorder, rules, text_actions=acting.text_actions)
    try:
        for trace_id in sorted(traces):
            members = traces[trace_id]
            by_id = {s.span_id: s for s in members}
            events: dict[str, int] = {}  # span id -> seq of the event it became
            agents: dict[str, str] = {}  # invoke_agent span id -> agent name
            doubles = _doubles(members, by_id)
            for span in _ordered(members):
                op = operation(span)
                if op is None or span.span_id in doubles:
                    continue
                clock[0] = span.start_ns
                parent = _nearest(span, by_id, events)
                actor = _nearest(span, by_id, agents)
                try:
                    seq = _event(conversations, trace_id, span, op, parent, actor)
                except (PayloadError, RecursionError) as exc:  # found only as it is written: all or nothing
                    reason = "JSON nested too deep" if isinstance(exc, RecursionError) else str(exc)
                    raise SdbError(f"{span.file}:{span.line}: span {span.name[:80]!r}: {reason}") from None
                if op == "invoke_agent":
                    agents[span.span_id] = str(span.attributes.get("gen_ai.agent.name") or "agent")
                if seq is not None:
                    events[span.span_id] = seq
        recorder.close()
    except BaseException:
        with contextlib.suppress(SdbError):  # events that could not be written: removed next anyway
            recorder.close("partial")  # its lock released first, then the run removed
        recorder.store.delete_run(recorder.run_id)  # all or nothing
        raise
    return ImportSummary(recorder.run_id, recorder.events_written, len(traces), bad)


def _event(
    conversations: ConversationRecorder, session: str, span: Span, op: str, parent: int | None, actor: str | None
) -> int | None:
    attrs = span.attributes
    failed = span.status_code == 2
    if op == "invoke_agent":
        agent = {
            k.removeprefix("gen_ai."): v
            for k, v in attrs.items()
            if k.startswith("gen_ai.agent.") or k in ("gen_ai.conversation.id", "gen_ai.input.messages")
        }
        name = str(attrs.get("gen_ai.agent.name") or "agent")
        return conversations.session(session).input(
            "invoke_agent", conversations.redactor.redact(agent), actor=name if actor is None else actor
        )
    if op == "execute_tool":
        call_id, name, args, result, captured = tool_call(span)
        return conversations.tool_result(
            session,
            call_id,
            name,
            result,
            args=args,
            actor=actor,
            status="error" if failed else "ok",
            content_missing=not captured,
        )
    request, response, captured = inference(span)
    if failed:
        error = {"message": span.status_message, "type": attrs.get("error.type")}
        return conversations.failure(session, request, None, error, parent=parent, actor=actor)
    if captured:
        conversations.request(session, request, actor=actor)
    tokens_in, tokens_out = tokens(attrs)
    return conversations.answer(
        session,
        request,
        response,
        model=model_spec(span),
        latency_ms=max(span.end_ns - span.start_ns, 0) / 1e6,
        parent=parent,
        actor=actor,
        content_missing=not captured,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
    )
