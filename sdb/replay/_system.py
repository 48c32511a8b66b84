"""A new system prompt for recorded traffic (``replay --system``, ``--system-from``). Recorded and
imported requests have no template to re-render, so the system prompt itself is replaced: the leading
system (or developer) message of a chat-completions request, inserted first when it has none; the
Responses API's ``instructions``; Anthropic's ``system``. The files are read from the paths the command
line names, never from a path a store names; the manifest keeps their names and xxh3 digests, which
``--resume`` compares."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from sdbctl.sdb.errors import UsageError

#: the roles a chat request's leading system prompt may have (``developer``: OpenAI's newer name)
SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class SystemFile:
    """A system prompt file named on the command line: its text and the digest of its bytes."""

    path: str  #: as the user named it
    text: str  #: the file's text, without its trailing line breaks
    digest: str  #: xxh3-64 of the file's bytes, 16 hex digits

    def saved(self) -> dict[str, str]:
        return {"file": self.path, "xxh3": self.digest}


def read_system_file(path: str, flag: str) -> SystemFile:
    """The file ``path`` (given with ``flag``); missing, unreadable, not UTF-8 or empty is one line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag} {path}: not UTF-8 text (byte {exc.start} cannot be read)") from None
    if not text.strip():
        raise UsageError(f"{flag} {path}: the file is empty; a system prompt needs text")
    return SystemFile(path=path, text=text, digest=xxhash.xxh3_64_hexdigest(data))


@dataclass(frozen=True)
class SystemRule:
    """``--system-from AGENT=FILE``: ``new``'s text for the requests of actor AGENT and, when AGENT is
    a file (``old``), for those whose recorded system prompt is its text."""

    agent: str  #: AGENT as given: an actor name, or a path
    new: SystemFile
    old: SystemFile | None = None  #: AGENT's text, when AGENT names a file

    def matches(self, actor: str, recorded: str | None) -> bool:
        """Whether this rule replaces the system prompt of a request of ``actor`` that recorded ``recorded``."""
        if actor == self.agent:
            return True
        return self.old is not None and recorded is not None and recorded.strip() == self.old.text.strip()

    @property
    def label(self) -> str:
        return f"--system-from {self.agent}={self.new.path}"

    def saved(self) -> dict[str, Any]:
        return {"agent": self.agent, **self.new.saved(), "old_xxh3": self.old.digest if self.old else None}


@dataclass(frozen=True)
class SystemChange:
    """What ``--system`` and ``--system-from`` ask: the rules in their order, then ``--system`` for
    every request no rule matched."""

    default: SystemFile | None = None  #: ``--system FILE``
    rules: tuple[SystemRule, ...] = ()  #: ``--system-from AGENT=FILE``, first match wins

    @property
    def labels(self) -> tuple[str, ...]:
        """One label per rule, ``--system`` last: :meth:`pick`'s indexes name them."""
        return tuple(r.label for r in self.rules) + ((f"--system {self.default.path}",) if self.default else ())

    def matching(self, actor: str, request: Mapping[str, Any]) -> tuple[int, ...]:
        """The indexes (in :attr:`labels`) of every rule that matches ``request`` (as recorded, by
        ``actor``), ``--system`` last: the first of them replaces its system prompt."""
        recorded = system_text(request)
        found = tuple(n for n, rule in enumerate(self.rules) if rule.matches(actor, recorded))
        return found + ((len(self.rules),) if self.default is not None else ())

    def pick(self, actor: str, request: Mapping[str, Any]) -> int | None:
        """The index (in :attr:`labels`) of what replaces the system prompt of ``request``, or None."""
        found = self.matching(actor, request)
        return found[0] if found else None

    def apply(self, actor: str, recorded: Mapping[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        """``request`` (the step's, maybe re-rendered) with the system prompt the rules give the
        recorded request ``recorded`` of ``actor``; unchanged when none applies."""
        n = self.pick(actor, recorded)
        if n is None:
            return request
        file = self.rules[n].new if n < len(self.rules) else self.default
        assert file is not None
        return with_system(request, file.text)

    def saved(self) -> dict[str, Any]:
        """What the manifest keeps (``meta.replay.system``): names and digests, never the text."""
        return {
            "system": self.default.saved() if self.default else None,
            "system_from": [r.saved() for r in self.rules],
        }


def system_change(system: str | None, system_from: Iterable[str]) -> SystemChange | None:
    """``--system FILE`` and ``--system-from AGENT=FILE`` read (None: neither given). AGENT names a
    file (the old prompt) when such a file exists; it matches an actor of that name too."""
    rules = []
    for spec in system_from:
        agent, eq, path = spec.partition("=")
        if not eq or not agent or not path:
            raise UsageError(
                f"--system-from {spec!r}: use AGENT=FILE, AGENT an actor of the run or a file holding "
                "its old system prompt"
            )
        old = read_system_file(agent, "--system-from") if Path(agent).is_file() else None
        rules.append(SystemRule(agent=agent, new=read_system_file(path, "--system-from"), old=old))
    default = read_system_file(system, "--system") if system is not None else None
    return SystemChange(default=default, rules=tuple(rules)) if default is not None or rules else None


def _text(content: Any) -> str | None:
    """A message content's text: a string, or the text of its parts (OpenAI's and Anthropic's)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        texts = [t for t in parts if isinstance(t, str)]
        return "\n".join(texts) if texts else None
    return None


def _responses(request: Mapping[str, Any]) -> bool:
    """Whether ``request`` is a Responses API request (``input`` and ``instructions``, no ``messages``)."""
    return "messages" not in request and ("instructions" in request or "input" in request)


def system_text(request: Mapping[str, Any]) -> str | None:
    """The system prompt ``request`` was recorded with (None: it has none)."""
    if _responses(request):
        return _text(request.get("instructions"))
    if "system" in request:  # Anthropic's Messages API
        return _text(request["system"])
    messages = request.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if isinstance(first, Mapping) and first.get("role") in SYSTEM_ROLES:
        return _text(first.get("content"))
    return None


def with_system(request: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A copy of ``request`` whose system prompt is ``text``: its ``instructions`` (Responses API), its
    ``system`` (Anthropic), else its leading system or developer message's content (a system message
    is inserted first when it has none)."""
    if _responses(request):
        return {**request, "instructions": text}
    if "system" in request:
        return {**request, "system": text}
    raw = request.get("messages")
    messages = list(raw) if isinstance(raw, list) else []
    if messages and isinstance(messages[0], Mapping) and messages[0].get("role") in SYSTEM_ROLES:
        messages[0] = {**messages[0], "content": text}
    else:
        messages.insert(0, {"role": "system", "content": text})
    return {**request, "messages": messages}
