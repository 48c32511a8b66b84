"""The closed vocabularies of the event schema: kinds of event and statuses of a boundary crossing."""

from __future__ import annotations

from typing import Final, Literal

Kind = Literal["input", "llm", "action", "gate", "effect", "state", "error"]
Status = Literal["ok", "parse_failed", "invalid", "gated", "error"]

KINDS: Final[tuple[str, ...]] = ("input", "llm", "action", "gate", "effect", "state", "error")
STATUSES: Final[tuple[str, ...]] = ("ok", "parse_failed", "invalid", "gated", "error")
