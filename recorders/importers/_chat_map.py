"""The map of ``sdbctl import chat``: where, in each conversation object, its messages, session id,
trial number, outcome and model are, and which tool results failed (see :mod:`._chat`); and how the
agent acts, which is the project's setting (``sdb.boundary.load_actions_setting``): a map may state it,
never change it, since a replay of the import reads the project's.

A path the map names must match something: one that matches nothing in any conversation would drop
what the map asks for (every session ``conv-N``, no outcome), so it is an error naming it and the
first conversation's keys. The paths left to their defaults are said in one note: which were found,
and which were not (with the keys of the first conversation that look like them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.recorders.importers._input import get_path, read_map
from sdbctl.sdb.boundary import load_actions_setting, parse_actions
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.text import visible

PATHS = ("messages", "session", "repeat", "outcome", "model")
KEYS = (*PATHS, "effect_error", "actions")
DEFAULTS: dict[str, str] = {
    "messages": "messages",
    "session": "id",
    "repeat": "repeat",
    "outcome": "outcome",
    "model": "model",
}
# the names other logs give these fields: said beside a default that was not found
LOOKALIKES: dict[str, tuple[str, ...]] = {
    "messages": ("traj", "trajectory", "conversation", "turns", "history", "dialog"),
    "session": ("task_id", "session_id", "conversation_id", "sample_id", "instance_id", "uuid"),
    "repeat": ("trial", "attempt", "epoch", "sample", "run"),
    "outcome": ("reward", "score", "success", "passed", "resolved", "correct"),
    "model": ("model_name", "agent_model", "llm"),
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
    source: Path | None = None  #: the map file, None for the defaults
    named: tuple[str, ...] = ()  #: the paths the map file names (the others are the defaults)

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
    named = tuple(k for k in PATHS if data.get(k))
    return ChatMap(
        messages=messages, effect_error=pattern, text_actions=setting.text_actions, source=path, named=named, **fields
    )


def check_paths(m: ChatMap, objects: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The paths of ``m`` against every conversation object read (``(where, object)``): a path the map
    names that matches nothing in any of them, or a messages path that does (nothing imports without
    it), is an error naming it and the first one's keys; for the paths left to their defaults, the
    note saying which were found and which were not (None when the map names them all)."""
    if not objects:
        return None
    where, first = objects[0]
    found = {k for k in PATHS if (path := getattr(m, k)) and any(get_path(o, path) is not None for _, o in objects)}
    for key in dict.fromkeys((*m.named, "messages")):
        if key in found:
            continue
        keys = ", ".join(visible(str(k)) for k in list(first)[:20]) + (" ..." if len(first) > 20 else "")
        like = _lookalikes(key, first)
        named = f"{m.source}: {key}" if key in m.named else f"import chat: the default {key}"
        hint = "" if key in m.named else ": name it in a --map file"
        raise SdbError(
            f'{named} = "{visible(getattr(m, key))}" matches nothing in any of the {len(objects)} conversations; '
            f"the first ({where}) has the keys {keys or '(none)'}{hint}"
            + (f' (perhaps {key} = "{like[0]}")' if like else "")
        )
    defaults = [k for k in PATHS if k not in m.named and getattr(m, k)]
    if not defaults:
        return None
    missing = [
        DEFAULTS[k] + (f" ({', '.join(like)})" if (like := _lookalikes(k, first)) else "")
        for k in defaults
        if k not in found
    ]
    said = ", ".join(DEFAULTS[k] for k in defaults if k in found) or "none"
    return f"import chat: found {said}" + (f"; not found: {', '.join(missing)}" if missing else "")


def _lookalikes(key: str, conversation: dict[str, Any]) -> list[str]:
    """The keys of ``conversation`` that other logs use for ``key`` (``reward`` for the outcome)."""
    return [visible(name) for name in LOOKALIKES[key] if name in conversation]
