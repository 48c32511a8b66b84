"""Observing the boundary without committing: a model answer's actions, as a recording or a step-mode
replay writes them. One function for both, so that a run recorded by the proxy or an importer and
its ``recorded`` replay derive the very same actions from the very same answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sdbctl.sdb.boundary._actions import InvalidArguments
from sdbctl.sdb.boundary._boundary import Boundary, UnknownAction
from sdbctl.sdb.boundary._proposal import ParseFailure, parse_response
from sdbctl.sdb.events import canonical_bytes, digest

# In an open vocabulary (no agent code at hand) an answer that is plain text and names no action is
# the action of sending that text: a chat agent's final reply is what it does at the boundary.
TEXT_REPLY = "message"


# Session.action, or anything with its signature: (name, args, *, parent, status, call_id, ...) -> seq
ActionSink = Callable[..., int]


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


def write_actions(
    sink: ActionSink, boundary: Boundary, response: Any, parent: int, where: Mapping[str, Any]
) -> list[int]:
    """Propose, verify and normalize ``response``; write each action (no commit); return their digests."""
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
