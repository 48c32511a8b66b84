"""``sdbctl import chat FILE...`` and ``sdbctl export RUN --format chat``: OpenAI chat-format
conversations (the ``messages`` lists that eval harnesses and agent frameworks log) as a run, and back.

**Input.** A file holds a JSON array of conversation objects, JSON lines of them, or one object (also
pretty-printed); with the map's ``conversations``, each of those is a file's object holding a list of
conversation objects at that path (tau2-bench's results: ``simulations``). Several files make one run.
An optional TOML map names, as dotted paths into each conversation object, where things are; every
key is optional::

    conversations = "simulations"  # the list of conversations in each file's object (default: none)
    messages = "traj"          # the messages list (default "messages")
    session = "task_id"        # the session id (default "id")
    repeat = "trial"           # the trial number of the session (default "repeat")
    outcome = "reward"         # success or reward: a number in [0, 1] or a boolean (default "outcome")
    model = "info.model"       # the model (default "model"; else in the file's object)
    tools = "info.tools"       # tool definitions for every request (default "tools"; else in the file's)
    effect_error = "^Error"    # a regular expression: a tool result whose text matches it failed
    tool_error = "error"       # a path in a tool result message: a truthy value there marks it failed
    actions = "json_text"      # must be the project's [tool.sdbctl.boundary] actions (a map states it)

``tools_path`` (``--tools FILE``) gives tool definitions (an OpenAI or Anthropic list, or an object with
one under ``tools``) for every request instead, since logs rarely keep them and a step-mode replay asks
the candidate with them; the manifest's ``meta.tools`` says where the requests' definitions came from.

The defaults are the keys :func:`export_chat` writes, so an exported file imports back with no map.
A key set to ``""`` is not read at all (``outcome = ""`` ignores an ``outcome`` field that means
something else). A path the map names that matches nothing in any conversation is an error, and the
paths left to their defaults are said in one note, found or not (:func:`._chat_map.check_paths`).
A conversation with no session id at its path is ``conv-N``, N its 0-based position
among all the conversation objects read, across the files in the order given (bad ones counted, so
ids do not move under ``--skip-bad``); a session id that is an integer is written as text.

**Events**, per conversation, through :class:`recorders.conversation.ConversationRecorder`, exactly
as the recording proxy writes live traffic:

- each ``assistant`` message is one call (but one that opens the conversation, with no message
  before it, which no request could have asked for, such as the greeting tau2-bench's orchestrator
  writes for the agent: it is history only): an ``llm`` event (step ``call-NNN``, name ``chat``, model
  ``openai:MODEL``, or ``chat`` when no model is known) whose request is ``{"messages": <the messages
  before it>}`` (+ ``model``, + ``tools`` when the object carries a ``tools`` list) and whose
  response is ``{"choices": [{"index": 0, "message": <the message>, "finish_reason": ...}]}``; then
  its actions (``sdb.boundary.write_actions``): one per tool call, or ``message {"content":
  TEXT}`` for an answer with none. Actions come only from tool calls: a JSON action in a text answer
  was never run by an environment that runs tool calls, so it is speech, unless the project says
  ``actions = "json_text"`` (``sdb.boundary.load_actions_setting``, which the recording proxy and a
  step-mode replay read too; then it is the action, arguments read from ``action_input`` and the
  like). Tool-call arguments that are a JSON string are
  kept as the model wrote them: a string that is not JSON is the model's parse failure (action
  ``?``, status ``parse_failed``), as the OpenTelemetry importer records it;
- tool calls are read in the OpenAI shape and flat (``{"id", "name", "arguments"}``, tau2-bench),
  stored in the OpenAI shape; arguments that are an object are written as canonical JSON text;
- each ``tool`` message is an ``effect`` of its call (``{"call_id", "content"}``; the call named by
  its ``tool_call_id``, else its ``id``), status ``error`` when ``effect_error`` matches its text, its
  value at ``tool_error`` is truthy, or it carries ``"is_error": true`` (what the chat export writes
  for a failed call), else ``ok``. A user message's own tool calls (tau2-bench's user simulator) and
  their results never reached the agent: they are left out. Ids are reused in real logs: a result
  answers the earliest unanswered call with its id; a result whose id matches no call is an effect
  named ``?``;
- Anthropic content blocks are read too: ``tool_use`` blocks of an assistant message are its tool
  calls (normalised to OpenAI ``tool_calls``, arguments as a JSON string, text blocks joined as the
  content, other blocks such as ``thinking`` dropped), and each ``tool_result`` block of a user
  message is a tool message (status ``error`` when ``is_error``); Anthropic tool definitions
  (``input_schema``) become OpenAI ones. Requests hold the normalised, OpenAI-shaped messages;
- the outcome, when there is one: a ``state`` event named ``outcome`` with payload ``{"value": V}``,
  V a float in [0, 1] (a boolean is 1.0 / 0.0), after the conversation's messages.

**Repeats.** The trials of one session id are ranked by their repeat value (a missing value counts
as 0): the lowest keeps the plain id, the next is ``ID#r1``, then ``ID#r2`` ... (the project's
convention for repeat K of a session), and the manifest's ``repeat`` is the largest number of trials
of any session (1 without repeats). Two conversations with the same session id and the same repeat
value (or none) are an error naming both places: numbering them silently would pair trials of
different tasks when the id field is wrong; map ``repeat`` to the field that numbers the trials. So is
an id that reads as another's trial (``x#r1`` beside ``x``): the differ would merge the two.

**Bad input** is all or nothing: every file is read and checked before anything is written, and the
first bad item is one line ``FILE:LINE: what is wrong`` (JSON lines), ``FILE[i]: ...`` (an element
of an array) or ``FILE: ...`` (one object); ``skip_bad`` imports the rest and counts what it
skipped (a duplicate is skipped after the first). Events carry no wall-clock time in these logs:
their ``ts`` is 1970-01-01 plus one millisecond per event in import order, so the same files always
import to the same events. Everything written is redacted (``[tool.sdbctl.redact]``), session ids
and model names included.

**Export.** :func:`export_chat` turns every session of a run into one conversation ``{"id",
"messages"}`` (+ ``outcome``, ``model``, ``tools``, and ``repeat`` K for a session ``ID#rK``, whose
``id`` is then the plain ID): the messages of the session's last llm request, its answer, then a tool
message for each effect recorded after it; a tool message whose effect failed carries ``"is_error":
true``. A session whose calls do not all extend one history (several agents in one session) exports
its last conversation only, and is counted in :attr:`ChatExport.partial`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdbctl.recorders.conversation import ConversationRecorder
from sdbctl.recorders.importers._chat_map import load_chat_map
from sdbctl.recorders.importers._chat_messages import load_tools
from sdbctl.recorders.importers._chat_read import Conversation, ranked_sessions, read_conversations
from sdbctl.recorders.importers._input import bulk
from sdbctl.recorders.importers._summary import ImportSummary
from sdbctl.sdb.errors import PayloadError, SdbError
from sdbctl.sdb.events import json_or_text
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.redaction import Redactor, load_redactor

_TICK_NS = 1_000_000  # one millisecond per event


def _write(
    conversations: ConversationRecorder, session: str, conv: Conversation, tools: list[Any] | None = None
) -> None:
    """The events of one conversation, written as the recording proxy writes live traffic: each
    answer is a call with the messages before it as its request (with ``tools``, else the
    conversation's own definitions), each tool result its effect."""
    defined = tools if tools is not None else conv.tools
    spec = f"openai:{conv.model}" if conv.model else "chat"
    history: list[dict[str, Any]] = []
    for item in conv.messages:
        message = item.message
        role = message["role"]
        if role == "assistant" and history:  # one with nothing before it was asked nothing: history only
            request: dict[str, Any] = {"messages": list(history)}
            if conv.model:
                request["model"] = conv.model
            if defined is not None:
                request["tools"] = defined
            response = {"choices": [{"index": 0, "message": message, "finish_reason": item.finish}]}
            conversations.answer(session, request, response, model=spec, latency_ms=None)
        elif item.status is not None:  # a tool result
            call_id = message.get("tool_call_id")
            name = "?" if call_id is not None else str(message.get("name") or "?")
            conversations.tool_result(session, call_id, name, json_or_text(message.get("content")), status=item.status)
        history.append(message)
    if conv.outcome is not None:
        conversations.session(session).state("outcome", conversations.redactor.redact({"value": conv.outcome}))


def import_chat(
    store: str | Path | None,
    paths: list[Path],
    map_path: Path | None = None,
    *,
    run_id: str | None = None,
    skip_bad: bool = False,
    redactor: Redactor | None = None,
    note: Callable[[str], None] | None = None,
    tools_path: Path | None = None,
) -> ImportSummary:
    """Import the conversations of ``paths`` (with the map in ``map_path``, else the defaults) into a
    new run; nothing is written unless all input is good (or ``skip_bad``). The tool definitions of
    ``tools_path`` (``--tools``) go in every request, instead of any the log holds. Once it is
    written, ``note`` is told which of the default paths were found (when the map leaves any to a
    default)."""
    if not paths:
        raise SdbError("import chat: no FILE given")
    with bulk():
        return _import_chat(store, paths, map_path, run_id, skip_bad, redactor, note, tools_path)


def _import_chat(
    store: str | Path | None,
    paths: list[Path],
    map_path: Path | None,
    run_id: str | None,
    skip_bad: bool,
    redactor: Redactor | None,
    note: Callable[[str], None] | None,
    tools_path: Path | None,
) -> ImportSummary:
    m = load_chat_map(map_path)
    tools = load_tools(tools_path) if tools_path is not None else None
    rules = redactor if redactor is not None else load_redactor()
    found, bad, defaults = read_conversations(paths, m, rules, skip_bad=skip_bad)
    named, repeat, duplicates = ranked_sessions(found, skip_bad)
    bad += duplicates
    if not named:
        where = str(paths[0]) if len(paths) == 1 else ", ".join(str(p) for p in paths)
        raise SdbError(f"{where}: no conversation to import" + (f" ({bad} bad skipped)" if bad else ""))
    if tools_path is not None:  # where the requests' definitions came from: shown, never read back
        source: str | None = f"--tools {tools_path}"
    else:
        source = f'tools = "{m.tools}"' if any(conv.tools is not None for _, conv in named) else None
    ticks = itertools.count(1)
    recorder = Recorder(
        store,
        {
            "mode": "record",
            "repeat": repeat,
            "imported_from": [str(p) for p in paths],
            "map": str(map_path) if map_path is not None else None,
            "fields": m.as_dict(),
            "tools": source,
            "redaction": rules.names,
            "skipped": bad,
        },
        run_id=run_id,
        handle_signals=False,
        recorder="chat",
        clock=lambda: next(ticks) * _TICK_NS,
    )
    conversations = ConversationRecorder(recorder, rules, text_actions=m.text_actions)
    named.reverse()  # taken from the end, in order: each conversation is let go once written
    try:
        while named:
            session, conv = named.pop()
            try:
                _write(conversations, session, conv, tools)
            except (PayloadError, RecursionError) as exc:  # found only as it is written: all or nothing
                reason = "JSON nested too deep" if isinstance(exc, RecursionError) else str(exc)
                raise SdbError(f"{conv.where}: {reason}") from None
            conversations.close(session)
        if not conversations.llm_events:  # conversations with no model call in them: nothing to replay
            where = str(paths[0]) if len(paths) == 1 else ", ".join(str(p) for p in paths)
            raise SdbError(f"{where}: no conversation holds a model call (an assistant message after a user's)")
        recorder.close()
    except BaseException:
        recorder.close("partial")
        recorder.store.delete_run(recorder.run_id)  # all or nothing
        raise
    if note is not None and defaults is not None:
        note(defaults)
    return ImportSummary(recorder.run_id, recorder.events_written, conversations.sessions, bad)
