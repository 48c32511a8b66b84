"""The differ's configuration, from ``[tool.sdbctl.diff]`` in ``pyproject.toml`` or an ``sdbctl.toml``
(``[diff]``), in the current directory: the action classes (layers), the speech threshold, and
per-action tolerances. Every key is checked for its type and range: a wrong one is a one-line error
naming the file and the key.

The rules of the verdict come from here, from the registered workload's code (its ``pure=True``
actions: :meth:`DiffConfig.with_pure`) and from the command line, never from a store: a run's
manifest travels with the store, so its copy of them is shown (a :class:`Rule` not ``obeyed``),
never applied.

    [tool.sdbctl.diff]
    read_only = ["get_*", "search_*"]   # globs of read-only actions (beside pure=True ones)
    speech = ["message", "reply_*"]     # globs of free-text actions (default: message)
    speech_threshold = 0.8              # similarity below it is speech_changed
    layers = ["write"]                  # the layers the headline rates (and the gate) count
    needs_effect = ["book_*"]           # globs of actions that committed only with an effect recorded

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
from sdbctl.sdb.settings import check_names, check_number, read_table, section

TEXT_RULES = ("case", "whitespace")
LAYERS = ("write", "read", "speech")
SPEECH_THRESHOLD = 0.8
_KEYS = ("actions", "read_only", "speech", "speech_threshold", "layers", "needs_effect")
# the largest numeric tolerance: beyond it every number equals every other, a field compared by nothing
# (to compare a field by nothing, say so: ignore)
MAX_TOLERANCE = 1e12


@dataclass(frozen=True)
class Rule:
    """One rule of the verdict and where it came from (a config file, ``workload NAME``, ``default``,
    the events), listed in every output of a diff and a gate; ``obeyed`` false: a manifest's copy that
    differs from what was applied, shown and not applied."""

    rule: str  #: read (globs), pure (actions the workload's code declares pure), speech (globs), success, mode
    values: tuple[str, ...]  #: the globs, action names, states or mode
    source: str  #: where it came from
    obeyed: bool = True  #: applied (false: a manifest's copy, shown only)

    def __str__(self) -> str:
        return f"{self.rule}: {', '.join(self.values) or 'none'} ({self.source})"


def rules_text(rules: Sequence[Rule], *, obeyed: bool = True) -> str:
    """The rules applied (or, ``obeyed`` false, the manifests' copies shown only) as one line."""
    return "; ".join(str(r) for r in rules if r.obeyed == obeyed)


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
        if not (self.ignore or self.text or self.unordered):  # nothing to change: a copy (most actions)
            return dict(args)
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
    ``speech`` (free text to a person), ``read`` when it matches ``read_only`` or is in ``pure`` (the
    ``pure=True`` actions of the registered workload's code: :meth:`with_pure`), else ``write``. The
    headline rates, the noise floor and the gate count the layers in ``layers``. ``*_from`` say where
    each rule came from (:meth:`rules`).
    """

    actions: Mapping[str, Tolerance] = field(default_factory=dict)
    source: str | None = None
    read_only: tuple[str, ...] = ()
    speech: tuple[str, ...] = ("message",)
    speech_threshold: float = SPEECH_THRESHOLD
    layers: tuple[str, ...] = ("write",)
    needs_effect: tuple[str, ...] = ()  #: globs: actions that committed only when an effect of theirs is recorded

    pure: tuple[str, ...] = ()  #: actions the registered workload's code declares pure=True
    read_from: str = "default"  #: where read_only came from
    speech_from: str = "default"  #: where speech came from
    pure_from: str = ""  #: where pure came from (workload NAME)

    def rules(self) -> list[Rule]:
        """The layer rules this configuration applies, each with where it came from."""
        out = [Rule("read", self.read_only, self.read_from)] if self.read_only else []
        if self.pure:
            out.append(Rule("pure", self.pure, self.pure_from))
        return [*out, Rule("speech", self.speech, self.speech_from)]

    def tolerance(self, action: str) -> Tolerance:
        return self.actions.get(action, self.actions.get("*", Tolerance()))

    def layer(self, action: str) -> str:
        """The class of ``action``: ``speech``, ``read`` or ``write``."""
        if any(fnmatchcase(action, g) for g in self.speech):
            return "speech"
        if action in self.pure or any(fnmatchcase(action, g) for g in self.read_only):
            return "read"
        return "write"

    def needs(self, action: str) -> bool:
        """Whether ``action`` committed only with a recorded effect (``needs_effect``)."""
        return any(fnmatchcase(action, g) for g in self.needs_effect)

    def with_layers(self, layers: Sequence[str] | str | None) -> DiffConfig:
        """This configuration counting ``layers`` (``write,read``) in the headline rates."""
        if layers is None:
            return self
        return replace(self, layers=parse_layers(layers, "--layers"))

    def with_pure(self, actions: Sequence[str], source: str) -> DiffConfig:
        """This configuration with ``actions`` in the read layer, as the code ``source`` names
        (``workload NAME``) declares them."""
        if not actions:
            return self
        sources = [s for s in self.pure_from.split(", ") if s]
        return replace(
            self,
            pure=tuple(sorted({*self.pure, *actions})),
            pure_from=", ".join(dict.fromkeys([*sources, source])),
        )


def parse_layers(value: Sequence[str] | str, where: str) -> tuple[str, ...]:
    """``write,read`` (or a list) as a tuple of known layers; anything else is a one-line error."""
    if not isinstance(value, str) and not (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)):
        raise SdbError(f"{where}: layers are {', '.join(LAYERS)} (a list, or comma-separated), not {value!r}")
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [v.strip() for v in value]
    items = [v for v in items if v]
    bad = [v for v in items if v not in LAYERS]
    if bad or not items:
        hint = did_you_mean(bad[0], LAYERS) if bad else ""
        raise SdbError(
            f"{where}: layers are {', '.join(LAYERS)} (comma-separated), not {', '.join(bad) or 'nothing'}{hint}"
        )
    return tuple(dict.fromkeys(items))


def _globs(value: Any, key: str, where: str) -> tuple[str, ...]:
    """The globs of ``key``; ``where`` names the file and its table (``FILE: [diff]``)."""
    return check_names(value, f"{where} {key}")


def _tolerance(name: str, table: Any, where: str) -> Tolerance:
    """One action's tolerances; ``where`` names the file and the table, or the flags."""
    where = f"{where}: action {name!r}:"
    if not isinstance(table, Mapping):
        raise SdbError(f"{where} must be a table (ignore, numeric_tolerance, unordered, text), not {table!r}")
    known = {"ignore", "numeric_tolerance", "unordered", "text"}
    unknown = set(table) - known
    if unknown:
        raise SdbError(f"{where} unknown key(s) {', '.join(sorted(unknown))} ({', '.join(sorted(known))})")
    text = table.get("text", [])
    if not isinstance(text, list) or not all(isinstance(t, str) and t in TEXT_RULES for t in text):
        raise SdbError(f"{where} text rules are {', '.join(TEXT_RULES)} (a list), not {text!r}")
    return Tolerance(
        check_names(table.get("ignore", []), f"{where} ignore", "a list of field names"),
        check_number(table.get("numeric_tolerance", 0.0), f"{where} numeric_tolerance", high=MAX_TOLERANCE),
        check_names(table.get("unordered", []), f"{where} unordered", "a list of field names"),
        tuple(text),
    )


def load_config(directory: Path | None = None, extra: Mapping[str, Tolerance] | None = None) -> DiffConfig:
    """Tolerances from ``sdbctl.toml`` ``[diff]`` or ``pyproject.toml`` ``[tool.sdbctl.diff]``; ``extra``
    (from flags) wins."""
    table, source = read_table("diff", directory)
    where = f"{source or 'config'}: {section('diff', source)}"
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise SdbError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} ({', '.join(_KEYS)})")
    given = table.get("actions", {})
    if not isinstance(given, Mapping):
        raise SdbError(f"{where} actions must be a table of per-action tables (actions.NAME), not {given!r}")
    actions = {name: _tolerance(name, t, f"{where} actions") for name, t in given.items()}
    actions.update(extra or {})
    threshold = check_number(table.get("speech_threshold", SPEECH_THRESHOLD), f"{where} speech_threshold", high=1)
    origin = Path(source).name if source else "default"
    return DiffConfig(
        actions,
        source,
        read_only=_globs(table.get("read_only", []), "read_only", where),
        speech=_globs(table.get("speech", ["message"]), "speech", where),
        speech_threshold=threshold,
        layers=parse_layers(table.get("layers", ["write"]), f"{where} layers"),
        read_from=origin if "read_only" in table else "default",
        speech_from=origin if "speech" in table else "default",
        needs_effect=_globs(table.get("needs_effect", []), "needs_effect", where),
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
                try:
                    entry(action)["numeric_tolerance"] = float(rest)  # its range: checked with the config's
                except ValueError:
                    raise SdbError(f"{flag} {value!r}: X must be a number") from None
    actions = dict(config.actions)
    actions.update({a: _tolerance(a, t, "flags") for a, t in merged.items()})
    return replace(config, actions=actions)
