"""The differ's configuration, from ``[tool.sdbctl.diff]`` in ``pyproject.toml`` or an ``sdbctl.toml``
(``[diff]``), in the current directory: the action classes (layers), the speech threshold, and
per-action tolerances.

    [tool.sdbctl.diff]
    read_only = ["get_*", "search_*"]   # globs of read-only actions (beside pure=True ones)
    speech = ["message", "reply_*"]     # globs of free-text actions (default: message)
    speech_threshold = 0.8              # similarity below it is speech_changed
    layers = ["write"]                  # the layers the headline rates (and the gate) count

    [tool.sdbctl.diff.actions.propose_offer]
    ignore = ["channel"]            # fields never compared
    numeric_tolerance = 0.5         # |old - new| <= 0.5 is equal
    unordered = ["drivers"]         # list fields compared as multisets
    text = ["case", "whitespace"]   # text normalisation before comparing
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.names import did_you_mean
from sdbctl.sdb.settings import read_table

TEXT_RULES = ("case", "whitespace")
LAYERS = ("write", "read", "speech")
SPEECH_THRESHOLD = 0.8
_KEYS = ("actions", "read_only", "speech", "speech_threshold", "layers")


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
    """What the differ compares and how leniently.

    An action's *layer* (its class, by the boundary's contract) is ``speech`` when its name matches
    ``speech`` (free text to a person), ``read`` when it matches ``read_only`` or is declared pure
    (``pure=True`` on a boundary action, written into the run's manifest), else ``write``. The
    headline rates, the noise floor and the gate count the layers in ``layers``.
    """

    actions: Mapping[str, Tolerance] = field(default_factory=dict)
    source: str | None = None
    read_only: tuple[str, ...] = ()
    speech: tuple[str, ...] = ("message",)
    speech_threshold: float = SPEECH_THRESHOLD
    layers: tuple[str, ...] = ("write",)

    def tolerance(self, action: str) -> Tolerance:
        return self.actions.get(action, self.actions.get("*", Tolerance()))

    def layer(self, action: str, declared_read: Sequence[str] = ()) -> str:
        """The class of ``action``: ``speech``, ``read`` or ``write``."""
        if any(fnmatchcase(action, g) for g in self.speech):
            return "speech"
        if action in declared_read or any(fnmatchcase(action, g) for g in self.read_only):
            return "read"
        return "write"

    def with_layers(self, layers: Sequence[str] | str | None) -> DiffConfig:
        """This configuration counting ``layers`` (``write,read``) in the headline rates."""
        if layers is None:
            return self
        return replace(self, layers=parse_layers(layers, "--layers"))


def parse_layers(value: Sequence[str] | str, where: str) -> tuple[str, ...]:
    """``write,read`` (or a list) as a tuple of known layers; anything else is a one-line error."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [v for v in items if v]
    bad = [v for v in items if v not in LAYERS]
    if bad or not items:
        hint = did_you_mean(bad[0], LAYERS) if bad else ""
        raise SdbError(
            f"{where}: layers are {', '.join(LAYERS)} (comma-separated), not {', '.join(bad) or 'nothing'}{hint}"
        )
    return tuple(dict.fromkeys(items))


def _globs(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SdbError(f"{where}: [diff] {key} must be a list of action names or globs")
    return tuple(value)


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
    where = source or "config"
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise SdbError(f"{where}: unknown [diff] key(s) {', '.join(sorted(unknown))} ({', '.join(_KEYS)})")
    actions = {name: _tolerance(name, t, where) for name, t in (table.get("actions") or {}).items()}
    actions.update(extra or {})
    threshold = table.get("speech_threshold", SPEECH_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise SdbError(f"{where}: [diff] speech_threshold must be a number in [0, 1], not {threshold!r}")
    return DiffConfig(
        actions,
        source,
        read_only=_globs(table.get("read_only", []), "read_only", where),
        speech=_globs(table.get("speech", ["message"]), "speech", where),
        speech_threshold=float(threshold),
        layers=parse_layers(table.get("layers", ["write"]), f"{where}: [diff] layers"),
    )


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
    return replace(config, actions=actions)
