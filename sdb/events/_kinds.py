"""The closed vocabularies of the event schema: kinds of event and statuses of a boundary crossing."""

from __future__ import annotations

from typing import Final, Literal

Kind = Literal["input", "llm", "action", "gate", "effect", "state", "error"]
Status = Literal["ok", "parse_failed", "invalid", "gated", "error"]

KINDS: Final[tuple[str, ...]] = ("input", "llm", "action", "gate", "effect", "state", "error")
STATUSES: Final[tuple[str, ...]] = ("ok", "parse_failed", "invalid", "gated", "error")
# the most repeats of a replay: repeat indexes (``$.replay.repeat``, sessions ``ID#rK``) are 0 to MAX_REPEAT - 1
MAX_REPEAT: Final = 1000

# what a guard's decision says when it allows: any of these words (any case, spaces around), or True
ALLOW_WORDS: Final = frozenset({"allow", "allowed", "approve", "approved", "pass", "passed", "ok", "accept"})


def gate_status(decision: object) -> Status:
    """``ok`` for an allowing decision (True, "allow", "Approved", ...), else ``gated``: the one rule
    for every writer of gate events (the recorder, the in-memory sink)."""
    if decision is True:
        return "ok"
    if isinstance(decision, str) and decision.strip().lower() in ALLOW_WORDS:
        return "ok"
    return "gated"


def llm_name(name: str | None, prompt: str | None) -> str:
    """An llm event's name: the one given, else the prompt's name (``offer`` of ``offer@v3``), else ``chat``."""
    return name or (prompt.split("@", 1)[0] if prompt else "chat")
