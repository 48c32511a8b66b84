"""The map of ``sdbctl import chat``: where, in each conversation object, its messages, session id,
trial number, outcome and model are, and which tool results failed (see :mod:`._chat`); and how the
agent acts, which is the project's setting (``sdb.boundary.load_actions_setting``): a map may state it,
never change it, since a replay of the import reads the project's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.recorders.importers._input import read_map
from sdbctl.sdb.boundary import load_actions_setting, parse_actions
from sdbctl.sdb.errors import SdbError

PATHS = ("messages", "session", "repeat", "outcome", "model")
KEYS = (*PATHS, "effect_error", "actions")
DEFAULTS: dict[str, str] = {
    "messages": "messages",
    "session": "id",
    "repeat": "repeat",
    "outcome": "outcome",
    "model": "model",
}


@dataclass(frozen=True)
class ChatMap:
    """Where each field is in a conversation object (dotted paths; None: not read), and the regular
    expression of a failed tool result."""

    messages: str = "messages"
    session: str | None = "id"
    repeat: str | None = "repeat"
    outcome: str | None = "outcome"
    model: str | None = "model"
    effect_error: re.Pattern[str] | None = None
    text_actions: bool = False  #: the agent writes actions as JSON in its text (the project's setting)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in PATHS}
        out["effect_error"] = self.effect_error.pattern if self.effect_error is not None else None
        out["actions"] = "json_text" if self.text_actions else "tool_calls"  # shown, never read back
        return out


def load_chat_map(path: Path | None) -> ChatMap:
    """The map in ``path`` (the defaults when None); a bad one is one line naming the file, and so is
    an ``actions`` that is not the project's setting."""
    setting = load_actions_setting()
    if path is None:
        return ChatMap(text_actions=setting.text_actions)
    data = read_map(path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise SdbError(f"{path}: unknown map key(s) {', '.join(unknown)} (keys: {', '.join(KEYS)})")
    wrong = [k for k, v in data.items() if k != "actions" and not isinstance(v, str)]
    if wrong:
        raise SdbError(f"{path}: {wrong[0]} must be a string (a dotted path, or a regular expression for effect_error)")
    if "actions" in data and parse_actions(data["actions"], f"{path}: actions") != setting.text_actions:
        raise SdbError(
            f"{path}: actions = {data['actions']!r}, but the project's is {setting.value!r} "
            f"({setting.named()}): a replay of the import reads text by the project's setting, so set it there"
        )
    fields: dict[str, str | None] = {k: data.get(k, DEFAULTS[k]) or None for k in PATHS}
    messages = fields.pop("messages")
    if messages is None:
        raise SdbError(f"{path}: messages cannot be empty (it names the messages list)")
    pattern: re.Pattern[str] | None = None
    if data.get("effect_error"):
        try:
            pattern = re.compile(data["effect_error"])
        except re.error as exc:
            raise SdbError(
                f"{path}: effect_error {data['effect_error']!r} is not a valid regular expression ({exc})"
            ) from None
    return ChatMap(messages=messages, effect_error=pattern, text_actions=setting.text_actions, **fields)
