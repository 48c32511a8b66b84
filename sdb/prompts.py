"""Versioned prompt templates: ``NAME@VERSION`` files rendered with recorded variables.

A template file is ``<dir>/<name>@<version>.txt`` with a ``## system`` and a ``## user`` section;
``{variable}`` placeholders are filled with :meth:`str.format_map`. Every ``llm`` event records the
template's name and version and the variables, so that a replay can re-render the prompt under
another version of the same template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdbctl.sdb.errors import SdbError

_SECTION = re.compile(r"^## (system|user|assistant)\s*$", re.M)


class PromptError(SdbError):
    """An unknown template or version, or a template that cannot be rendered."""


@dataclass(frozen=True)
class PromptLibrary:
    """The templates in one directory."""

    root: Path

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` that exist, in natural order (v1, v2, ..., v10)."""
        found = [p.stem.split("@", 1)[1] for p in self.root.glob(f"{name}@*.txt")]
        return sorted(found, key=lambda v: (len(v), v))

    def names(self) -> list[str]:
        return sorted({p.stem.split("@", 1)[0] for p in self.root.glob("*@*.txt")})

    def check(self, ref: str) -> tuple[str, str]:
        """Split and check ``NAME@VERSION``; a missing one is refused with the versions that exist."""
        name, at, version = ref.partition("@")
        if not at or not name or not version:
            raise PromptError(f"prompt {ref!r} must be NAME@VERSION, e.g. offer@v2")
        if not (self.root / f"{name}@{version}.txt").is_file():
            existing = self.versions(name)
            if not existing:
                raise PromptError(f"prompt {ref!r}: no template named {name!r} (templates: {', '.join(self.names())})")
            raise PromptError(f"prompt {ref!r}: no version {version!r} of {name!r} (versions: {', '.join(existing)})")
        return name, version

    def render(self, ref: str, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages of template ``ref`` filled with ``variables``."""
        name, version = self.check(ref)
        text = (self.root / f"{name}@{version}.txt").read_text(encoding="utf-8")
        parts = _SECTION.split(text)
        messages = []
        for role, body in zip(parts[1::2], parts[2::2], strict=True):
            try:
                content = body.strip().format_map(dict(variables))
            except KeyError as exc:
                raise PromptError(f"prompt {ref!r}: variable {exc.args[0]!r} is not given") from None
            messages.append({"role": role, "content": content})
        if not messages:
            raise PromptError(f"prompt {ref!r}: template has no '## system' or '## user' section")
        return messages
