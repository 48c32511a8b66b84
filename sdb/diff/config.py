"""Per-action tolerances for the differ, from ``[tool.sdbctl.diff]`` in ``pyproject.toml`` or an
``sdbctl.toml`` (``[diff]``), in the current directory.

    [tool.sdbctl.diff.actions.propose_offer]
    ignore = ["channel"]            # fields never compared
    numeric_tolerance = 0.5         # |old - new| <= 0.5 is equal
    unordered = ["drivers"]         # list fields compared as multisets
    text = ["case", "whitespace"]   # text normalisation before comparing
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdb.errors import SdbError
from sdb.settings import read_table

TEXT_RULES = ("case", "whitespace")


@dataclass(frozen=True)
class Tolerance:
    """How leniently one action's arguments are compared."""

    ignore: tuple[str, ...] = ()
    numeric_tolerance: float = 0.0
    unordered: tuple[str, ...] = ()
    text: tuple[str, ...] = ()

    @property
    def strict(self) -> bool:
        return not (self.ignore or self.numeric_tolerance or self.unordered or self.text)

    def normalise(self, args: Any) -> Any:
        """``args`` with ignored fields dropped, text normalised and unordered lists sorted (arguments
        that are not an object are compared as they are)."""
        if not isinstance(args, Mapping):
            return args
        out: dict[str, Any] = {}
        for key, value in args.items():
            if key in self.ignore:
                continue
            if isinstance(value, str) and self.text:
                if "whitespace" in self.text:
                    value = " ".join(value.split())
                if "case" in self.text:
                    value = value.lower()
            if key in self.unordered and isinstance(value, list):
                value = sorted(value, key=repr)
            out[key] = value
        return out


@dataclass(frozen=True)
class DiffConfig:
    actions: Mapping[str, Tolerance] = field(default_factory=dict)
    source: str | None = None

    def tolerance(self, action: str) -> Tolerance:
        return self.actions.get(action, self.actions.get("*", Tolerance()))


def _tolerance(name: str, table: Mapping[str, Any], where: str) -> Tolerance:
    known = {"ignore", "numeric_tolerance", "unordered", "text"}
    unknown = set(table) - known
    if unknown:
        raise SdbError(
            f"{where}: action {name!r}: unknown key(s) {', '.join(sorted(unknown))} ({', '.join(sorted(known))})"
        )
    text = tuple(table.get("text", ()))
    bad = [t for t in text if t not in TEXT_RULES]
    if bad:
        raise SdbError(f"{where}: action {name!r}: text rules are {', '.join(TEXT_RULES)}, not {', '.join(bad)}")
    try:
        tol = float(table.get("numeric_tolerance", 0.0))
    except (TypeError, ValueError):
        raise SdbError(f"{where}: action {name!r}: numeric_tolerance must be a number") from None
    return Tolerance(tuple(table.get("ignore", ())), tol, tuple(table.get("unordered", ())), text)


def load_config(directory: Path | None = None, extra: Mapping[str, Tolerance] | None = None) -> DiffConfig:
    """Tolerances from ``sdbctl.toml`` ``[diff]`` or ``pyproject.toml`` ``[tool.sdbctl.diff]``; ``extra``
    (from flags) wins."""
    table, source = read_table("diff", directory)
    actions = {name: _tolerance(name, t, source or "config") for name, t in (table.get("actions") or {}).items()}
    actions.update(extra or {})
    return DiffConfig(actions, source)


def tolerance_flags(
    config: DiffConfig,
    *,
    ignore: list[str] | None = None,
    unordered: list[str] | None = None,
    numeric: list[str] | None = None,
    text: list[str] | None = None,
) -> DiffConfig:
    """``config`` with command-line tolerances on top: ``ignore``/``unordered`` as ``ACTION.FIELD``,
    ``numeric`` as ``ACTION=X``, ``text`` as ``ACTION=case,whitespace`` (``*`` for every action)."""
    merged: dict[str, dict[str, Any]] = {}

    def entry(action: str) -> dict[str, Any]:
        if action not in merged:
            t = config.tolerance(action)
            merged[action] = {
                "ignore": list(t.ignore),
                "numeric_tolerance": t.numeric_tolerance,
                "unordered": list(t.unordered),
                "text": list(t.text),
            }
        return merged[action]

    for flag, values, key in (("--ignore", ignore, "ignore"), ("--unordered", unordered, "unordered")):
        for value in values or []:
            action, dot, name = value.partition(".")
            if not dot or not action or not name:
                raise SdbError(f"{flag} {value!r}: use ACTION.FIELD (or *.FIELD)")
            entry(action)[key].append(name)
    for flag, values in (("--numeric-tolerance", numeric), ("--text", text)):
        for value in values or []:
            action, eq, rest = value.partition("=")
            if not eq or not action or not rest:
                raise SdbError(f"{flag} {value!r}: use ACTION=VALUE (or *=VALUE)")
            if flag == "--text":
                entry(action)["text"] = rest.split(",")
            else:
                entry(action)["numeric_tolerance"] = rest
    actions = dict(config.actions)
    actions.update({a: _tolerance(a, t, "flags") for a, t in merged.items()})
    return DiffConfig(actions, config.source)
