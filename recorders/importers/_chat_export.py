"""``sdbctl export RUN --format chat``: every session of a run as one chat-format conversation, the
file ``sdbctl import chat`` reads back with no map (see :mod:`._chat`)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sdbctl.recorders.importers._chat_messages import assistant_message
from sdbctl.recorders.importers._chat_read import REPEATED
from sdbctl.sdb.boundary import answer_message
from sdbctl.sdb.diff import run_outcomes
from sdbctl.sdb.events import canonical_bytes
from sdbctl.sdb.store import Store, event_dicts, run_events, write_file


@dataclass
class ChatExport:
    """What :func:`export_chat` wrote: conversations, the sessions it could not rebuild (no llm call
    with messages), and those whose earlier calls are not all in the last call's history (a line holds
    one conversation: those calls are left out), with the number of calls left out."""

    conversations: int = 0
    skipped: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    left_out_calls: int = 0


def _reply(response: Any) -> dict[str, Any] | None:
    """The assistant message of a recorded answer (OpenAI choices, an Anthropic message), OpenAI-shaped."""
    message = answer_message(response)
    if message is None:
        return None
    try:
        return assistant_message({**message, "role": "assistant"}, "response").message
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


def _session_chat(
    session: str, events: list[dict[str, Any]], report: ChatExport, passed: bool | None = None
) -> dict[str, Any] | None:
    """The conversation of one session: its last call's history, the answer, the tool results after it
    (see :mod:`._chat`), and its outcome (an imported one as it was, else ``passed`` as 1.0 or 0.0);
    None, and counted, when it has no call with messages."""
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
    left_out = 0
    for call in calls[:-1]:
        earlier = call["payload"]["request"]["messages"]
        if len(earlier) > len(messages) or not history.startswith(canonical_bytes(earlier)[:-1]):
            left_out += 1
    if left_out:
        report.partial.append(session)
        report.left_out_calls += left_out
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
    base = REPEATED.match(session)
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
    elif passed is not None:  # a terminal state judged by the success states: what import chat reads back
        out["outcome"] = 1.0 if passed else 0.0
    return out


def export_chat(store: Store, run_id: str, report: ChatExport | None = None) -> Iterator[dict[str, Any]]:
    """Every session of ``run_id`` as one chat-format conversation, in session order (see the module
    docstring); ``report`` counts what was written and what could not be."""
    report = report if report is not None else ChatExport()
    table = run_events(store, run_id)
    passed = run_outcomes(store, run_id)
    for session, events in itertools.groupby(event_dicts(table, whole=True), key=lambda e: str(e["session_id"])):
        conversation = _session_chat(session, list(events), report, passed.get(session))
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
        write_file(out, lines)  # whole or not at all; an error names ``out``
    else:
        lines(out)
    return report
