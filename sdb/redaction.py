"""Secret and personal-data redaction, applied to payloads before they reach a store.

Rules are regular expressions; a match is replaced by ``[REDACTED:<rule>]``. The defaults catch the
usual API-key shapes and e-mail addresses. ``[tool.sdbctl.redact]`` in ``pyproject.toml`` (or
``[redact]`` in ``sdbctl.toml``) switches defaults off and adds rules::

    [tool.sdbctl.redact]
    defaults = true                    # or false, or a list of default rule names to keep
    [tool.sdbctl.redact.rules]
    customer_id = "CUST-[0-9]{6}"

Headers are never recorded at all: redaction is for the text inside request and response bodies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdb.errors import SdbError
from sdb.settings import read_table

DEFAULT_RULES: dict[str, str] = {
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}",
    "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    "google_api_key": r"\bAIza[0-9A-Za-z_\-]{35}",
    "slack_token": r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    "bearer_token": r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*",
    # starts only where a run of address characters starts: linear, however long the text
    "email": r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
}


@dataclass(frozen=True)
class Redactor:
    """Compiled rules; ``redact`` returns a copy of a JSON value with every string redacted."""

    rules: tuple[tuple[str, re.Pattern[str]], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.rules]

    def text(self, value: str) -> str:
        for name, pattern in self.rules:
            value = pattern.sub(f"[REDACTED:{name}]", value)
        return value

    def redact(self, value: Any) -> Any:
        if not self.rules:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):  # keys too: a tool's result may be keyed by an address
            return {(self.text(k) if isinstance(k, str) else k): self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value


def build(rules: Mapping[str, str], origin: str) -> Redactor:
    compiled = []
    for name, pattern in rules.items():
        if not isinstance(pattern, str):
            raise SdbError(f"{origin}: redaction rule {name!r} must be a regular expression string")
        try:
            compiled.append((name, re.compile(pattern)))
        except re.error as exc:
            raise SdbError(f"{origin}: redaction rule {name!r} is not a valid regular expression ({exc})") from None
    return Redactor(tuple(compiled))


def load_redactor(directory: Path | None = None) -> Redactor:
    """The redaction rules configured in the current directory (the defaults when none are)."""
    table, origin = read_table("redact", directory)
    where = origin or "[tool.sdbctl.redact]"
    unknown = set(table) - {"defaults", "rules"}
    if unknown:
        raise SdbError(f"{where}: unknown redact key(s) {', '.join(sorted(unknown))} (keys: defaults, rules)")
    defaults = table.get("defaults", True)
    if defaults is True:
        rules = dict(DEFAULT_RULES)
    elif defaults is False:
        rules = {}
    elif isinstance(defaults, list) and all(isinstance(d, str) for d in defaults):
        bad = sorted(set(defaults) - set(DEFAULT_RULES))
        if bad:
            raise SdbError(f"{where}: no default redaction rule {', '.join(bad)} ({', '.join(DEFAULT_RULES)})")
        rules = {name: DEFAULT_RULES[name] for name in defaults}
    else:
        raise SdbError(f"{where}: redact.defaults must be true, false or a list of rule names")
    extra = table.get("rules", {})
    if not isinstance(extra, Mapping):
        raise SdbError(f'{where}: redact.rules must be a table of NAME = "REGEX"')
    rules.update(extra)
    return build(rules, where)
