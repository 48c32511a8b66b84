"""Model specs to providers. Families register a factory; simulators register by name and version."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from sdbctl.sdb.names import did_you_mean
from sdbctl.sdb.providers._base import Provider, UnknownModel

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


def _load_builtin_families() -> None:
    """Register openai:, anthropic:, llama: and py: on first use (their modules import their SDKs lazily)."""
    if "openai" not in _FAMILIES:
        from sdbctl.sdb.providers import _llama_local, _openai_compat, _python_callable

        register_family("openai", _openai_compat.make_openai)
        register_family("anthropic", _openai_compat.make_anthropic)
        register_family("llama", _llama_local.make_llama)
        register_family("py", _python_callable.make_python)


def known_specs() -> list[str]:
    """What ``--model`` accepts, for error messages and ``--help``."""
    _load_builtin_families()
    return sorted(["recorded", *(f"{p}:MODEL" for p in _FAMILIES), *(f"sim:{n}@vN" for n in _SIMULATORS)])


def _split(spec: str) -> tuple[str, dict[str, str]]:
    body, _, query = spec.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UnknownModel(f"model spec {spec!r}: cannot read its parameters {query!r} (use ?key=value&...)") from None
    return body, params


def resolve(spec: str, options: Mapping[str, str] | None = None) -> Provider:
    """The provider for ``spec``; an unknown one is a one-line :class:`UnknownModel`.

    ``options`` (``base_url``, ``timeout`` ...) reach the family's factory with the spec's parameters.
    """
    _load_builtin_families()
    body, params = _split(spec.strip())
    params = {**params, **{k: v for k, v in (options or {}).items() if v is not None}}
    family, sep, rest = body.partition(":")
    if family == "sim" and sep:
        name, at, version = rest.partition("@")
        if name not in _SIMULATORS:
            known = ", ".join(f"sim:{n}@vN" for n in sorted(_SIMULATORS)) or "none registered"
            raise UnknownModel(f"unknown simulator {spec!r}; simulators: {known}{did_you_mean(name, _SIMULATORS)}")
        if not at or not version:
            raise UnknownModel(f"model spec {spec!r}: a simulator needs a version, e.g. sim:{name}@v1")
        return _SIMULATORS[name](version, params)
    if sep and family in _FAMILIES:
        if not rest:
            raise UnknownModel(f"model spec {spec!r}: name the model after '{family}:'")
        return _FAMILIES[family](rest, params)
    if not sep and body in _FAMILIES:
        return _FAMILIES[body]("", params)
    near = did_you_mean(family, [*_FAMILIES, "sim", "recorded"]) if family != "recorded" else ""
    raise UnknownModel(f"unknown model spec {spec!r}; expected one of: {', '.join(known_specs())}{near}")
