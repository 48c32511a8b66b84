"""Observing the boundary without committing: a model answer's actions, as a recording or a step-mode
replay writes them. One function for both, so that a run recorded by the proxy or an importer and
its ``recorded`` replay derive the very same actions from the very same answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.sdb.boundary._actions import InvalidArguments
from sdbctl.sdb.boundary._boundary import Boundary, UnknownAction
from sdbctl.sdb.boundary._proposal import ParseFailure, parse_response
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import canonical_bytes, digest
from sdbctl.sdb.settings import read_table, section

# In an open vocabulary (no agent code at hand) an answer that is plain text and names no action is
# the action of sending that text: a chat agent's final reply is what it does at the boundary.
TEXT_REPLY = "message"


# Session.action, or anything with its signature: (name, args, *, parent, status, call_id, ...) -> seq
ActionSink = Callable[..., int]

# How an agent we have no code for acts: through tool calls only (its text is speech), or also by a
# JSON object in its text (ReAct style). The user's to say, in ``[tool.sdbctl.boundary] actions``
# (``[boundary]`` of sdbctl.toml), never a run's: the proxy, the importers and a step-mode replay all
# read it here, so that a recording and its ``recorded`` replay read the same answer the same way.
ACTIONS = ("tool_calls", "json_text")
_TABLE = "boundary"


def parse_actions(value: Any, where: str) -> bool:
    """An ``actions`` value as whether a text answer can hold an action; anything but one of
    :data:`ACTIONS` is a one-line error naming ``where``. The one parser of the setting, the project's
    and an import map's statement of it alike."""
    if value not in ACTIONS:
        raise SdbError(f"{where} must be {' or '.join(repr(a) for a in ACTIONS)}, not {value!r}")
    return bool(value == "json_text")


@dataclass(frozen=True)
class ActionsSetting:
    """The project's ``actions`` setting and where it was said."""

    text_actions: bool = False  #: a JSON object in a text answer is an action (``json_text``)
    where: str = ""  #: the config key that said so ("" when nothing did: the default)

    @property
    def value(self) -> str:
        return ACTIONS[1] if self.text_actions else ACTIONS[0]

    def named(self) -> str:
        """Where to find (or set) it, for a message."""
        return self.where or f"the default; set in pyproject.toml [tool.sdbctl.{_TABLE}] or sdbctl.toml [{_TABLE}]"


def load_actions_setting(directory: Path | None = None) -> ActionsSetting:
    """``actions`` of the project's ``[tool.sdbctl.boundary]`` (``[boundary]`` of sdbctl.toml); text
    is speech (``tool_calls``) unless the user says ``json_text``."""
    table, source = read_table(_TABLE, directory)
    if source is None:
        return ActionsSetting()
    where = f"{source}: {section(_TABLE, source)}"
    unknown = sorted(set(table) - {"actions"})
    if unknown:
        raise SdbError(f"{where}: unknown key(s) {', '.join(unknown)} (actions)")
    return ActionsSetting(parse_actions(table.get("actions", ACTIONS[0]), f"{where} actions"), f"{where} actions")


def answer_message(response: Any) -> Mapping[str, Any] | None:
    """The assistant message of a recorded answer: an OpenAI answer's first choice's message, or an
    Anthropic message (its ``content``); None for anything else."""
    if not isinstance(response, Mapping):
        return None
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        message = choices[0].get("message")
        return message if isinstance(message, Mapping) else None
    if "content" in response:
        return {"role": "assistant", "content": response["content"]}
    return None


def answer_text(response: Any) -> str | None:
    """The text of an answer's assistant message (see :func:`answer_message`), if any."""
    if isinstance(response, str):
        return response
    message = answer_message(response)
    if message is None:
        return None
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return content if isinstance(content, str) and content.strip() else None


def _has_tool_calls(response: Any) -> bool:
    """Whether an answer holds tool calls (OpenAI ``tool_calls`` or ``function_call``, Anthropic
    ``tool_use`` blocks), the only actions an environment runs for an agent that does not act in text."""
    # an OpenAI answer's message; an Anthropic message or a bare assistant message is its own
    message = answer_message(response) if isinstance(response, Mapping) and "choices" in response else response
    if not isinstance(message, Mapping):
        return False
    content = message.get("content")
    blocks = content if isinstance(content, list) else []
    return bool(message.get("tool_calls") or message.get("function_call")) or any(
        isinstance(b, Mapping) and b.get("type") == "tool_use" for b in blocks
    )


def write_actions(
    sink: ActionSink,
    boundary: Boundary,
    response: Any,
    parent: int,
    where: Mapping[str, Any],
    *,
    text_actions: bool,
) -> list[int]:
    """Propose, verify and normalize ``response``; write each action (no commit); return their digests.

    ``text_actions`` is :func:`load_actions_setting`'s. False (an open vocabulary whose agent acts only
    through tool calls): an answer with no tool call is speech, ``message {"content": TEXT}``, whatever
    JSON its text holds."""
    if not text_actions and boundary.open_vocabulary and not _has_tool_calls(response):
        text = answer_text(response)
        if text is not None:
            reply = {"content": text}
            sink(TEXT_REPLY, reply, parent=parent, **where)
            return [digest(TEXT_REPLY, canonical_bytes(reply))]
    found = parse_response(response)
    if isinstance(found, ParseFailure):
        text = answer_text(response) if boundary.open_vocabulary else None
        if text is not None:
            reply = {"content": text}
            sink(TEXT_REPLY, reply, parent=parent, **where)
            return [digest(TEXT_REPLY, canonical_bytes(reply))]
        sink("?", {}, status="parse_failed", parent=parent, error=found.reason, **where)
        return [digest("?", b"{}")]
    digests = []
    for proposal in found:
        try:
            valid = boundary.verify(proposal)
        except (InvalidArguments, UnknownAction) as exc:
            errors = [e.as_dict() for e in exc.errors] if isinstance(exc, InvalidArguments) else []
            args = proposal.args if isinstance(proposal.args, Mapping) else {"(arguments)": proposal.args}
            sink(
                proposal.name,
                args,
                status="invalid",
                parent=parent,
                call_id=proposal.call_id,
                error={"reason": str(exc), "fields": errors},
                **where,
            )
            digests.append(digest(proposal.name, canonical_bytes(args)))
            continue
        sink(valid.name, valid.args, parent=parent, call_id=valid.call_id, **where)
        digests.append(valid.digest)
    return digests
