"""Model specs to providers. Families register a factory; simulators register by name and version."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from sdb.providers.base import Provider, UnknownModel

Factory = Callable[[str, dict[str, str]], Provider]
SimFactory = Callable[[str, dict[str, str]], Provider]

_FAMILIES: dict[str, Factory] = {}
_SIMULATORS: dict[str, SimFactory] = {}


def register_family(prefix: str, factory: Factory) -> None:
    """Make ``prefix:MODEL[?k=v]`` specs resolve through ``factory(MODEL, params)``."""
    _FAMILIES[prefix] = factory


def register_simulator(name: str, factory: SimFactory) -> None:
    """Make ``sim:NAME@VERSION[?k=v]`` resolve through ``factory(VERSION, params)``."""
    _SIMULATORS[name] = factory


def known_specs() -> list[str]:
    """What ``--model`` accepts, for error messages and ``--help``."""
    return sorted([*(f"{p}:MODEL" for p in _FAMILIES), *(f"sim:{n}@vN" for n in _SIMULATORS)])


def _split(spec: str) -> tuple[str, dict[str, str]]:
    body, _, query = spec.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UnknownModel(f"model spec {spec!r}: cannot read its parameters {query!r} (use ?key=value&...)") from None
    return body, params


def resolve(spec: str) -> Provider:
    """The provider for ``spec``; an unknown one is a one-line :class:`UnknownModel`."""
    body, params = _split(spec.strip())
    family, sep, rest = body.partition(":")
    if family == "sim" and sep:
        name, at, version = rest.partition("@")
        if name not in _SIMULATORS:
            known = ", ".join(f"sim:{n}@vN" for n in sorted(_SIMULATORS)) or "none registered"
            raise UnknownModel(f"unknown simulator {spec!r}; simulators: {known}")
        if not at or not version:
            raise UnknownModel(f"model spec {spec!r}: a simulator needs a version, e.g. sim:{name}@v1")
        return _SIMULATORS[name](version, params)
    if sep and family in _FAMILIES:
        if not rest:
            raise UnknownModel(f"model spec {spec!r}: name the model after '{family}:'")
        return _FAMILIES[family](rest, params)
    if not sep and body in _FAMILIES:
        return _FAMILIES[body]("", params)
    raise UnknownModel(f"unknown model spec {spec!r}; expected one of: {', '.join(known_specs())}")
