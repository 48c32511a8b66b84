"""The map of ``sdbctl import chat``: where, in each file's object, its list of conversations is
(``conversations``, when a file holds them under a key); where, in each conversation object, its
messages, session id, trial number, outcome, model and tool definitions are (the last two looked up in
the file's object when the conversation has none); which tool results failed (see :mod:`._chat`); and
how the agent acts, which is the project's setting (``sdb.boundary.load_actions_setting``): a map may
state it, never change it, since a replay of the import reads the project's.

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

PATHS = ("messages", "session", "repeat", "outcome", "model")  # the fields said in the note of defaults
FILE_LEVEL = ("model", "tools")  # found in the file's object when the conversation has none
KEYS = ("conversations", *PATHS, "tools", "effect_error", "tool_error", "actions")
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
    "tools": ("functions", "tool_definitions", "tool_defs"),
}


@dataclass(frozen=True)
class ChatMap:
    """Where the conversations are in a file's object (None: the object is one), where each field is
    in a conversation object (dotted paths; None: not read), and what marks a tool result failed."""

    messages: str = "messages"
    session: str | None = "id"
    repeat: str | None = "repeat"
    outcome: str | None = "outcome"
    model: str | None = "model"
    conversations: str | None = None
    tools: str | None = "tools"
    effect_error: re.Pattern[str] | None = None
    tool_error: str | None = None  #: a dotted path in a tool result whose truthy value marks it failed
    text_actions: bool = False  #: the agent writes actions as JSON in its text (the project's setting)
    source: Path | None = None  #: the map file, None for the defaults
    named: tuple[str, ...] = ()  #: the paths the map file names (the others are the defaults)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("conversations", *PATHS, "tools", "tool_error")}
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
    named = tuple(k for k in (*PATHS, "tools") if data.get(k))
    return ChatMap(
        messages=messages,
        conversations=data.get("conversations") or None,
        tools=data.get("tools", "tools") or None,
        effect_error=pattern,
        tool_error=data.get("tool_error") or None,
        text_actions=setting.text_actions,
        source=path,
        named=named,
        **fields,
    )


def _found(key: str, path: str, objects: list[tuple[str, dict[str, Any], Any]]) -> bool:
    """Whether ``path`` matches something in a conversation object, or in a file's (for ``FILE_LEVEL``)."""
    files = key in FILE_LEVEL
    return any(get_path(o, path) is not None or (files and get_path(f, path) is not None) for _, o, f in objects)


def check_paths(m: ChatMap, objects: list[tuple[str, dict[str, Any], Any]]) -> str | None:
    """The paths of ``m`` against every conversation object read (``(where, object, its file's object
    or None)``): a path the map names that matches nothing in any of them, or a messages path that
    does (nothing imports without it), is an error naming it and the first one's keys; for the paths
    left to their defaults, the note saying which were found and which were not (None when the map
    names them all)."""
    if not objects:
        return None
    where, first, _ = objects[0]
    found = {k for k in (*PATHS, "tools") if (path := getattr(m, k)) and _found(k, path, objects)}
    for key in dict.fromkeys((*m.named, "messages")):
        if key in found:
            continue
        keys = ", ".join(visible(str(k)) for k in list(first)[:20]) + (" ..." if len(first) > 20 else "")
        like = [f'{key} = "{name}"' for name in _lookalikes(key, first)]
        nested = _nested_list(first, m.messages) if key == "messages" and m.conversations is None else None
        if nested is not None:  # the conversations are a list inside the object
            like.insert(0, f'conversations = "{nested}"')
        named = f"{m.source}: {key}" if key in m.named else f"import chat: the default {key}"
        hint = "" if key in m.named else ": name it in a --map file"
        raise SdbError(
            f'{named} = "{visible(getattr(m, key))}" matches nothing in any of the {len(objects)} conversations; '
            f"the first ({where}) has the keys {keys or '(none)'}{hint}" + (f" (perhaps {like[0]})" if like else "")
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


def _nested_list(obj: dict[str, Any], messages: str) -> str | None:
    """The key of ``obj`` holding a list of conversations (objects with a ``messages`` path): a file
    that keeps them under a key, as tau2-bench's ``simulations``, for a hint."""
    for key, value in obj.items():
        rows = value if isinstance(value, list) and all(isinstance(v, dict) for v in value) else []
        if any(get_path(v, messages) is not None for v in rows):
            return visible(str(key))
    return None
