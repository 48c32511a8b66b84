"""Models behind one async interface: a chat-completions request in, a response in the same shape out.

A provider is resolved from a model spec: ``sim:NAME@VERSION[?noise=X]`` (simulators registered by
the workloads), and, as the replay issue adds them, ``recorded``, ``openai:MODEL``,
``anthropic:MODEL`` and ``py:module:function``.
"""

from sdbctl.sdb.providers.base import Completion, Provider, ProviderError, UnknownModel
from sdbctl.sdb.providers.registry import known_specs, register_family, register_simulator, resolve

__all__ = [
    "Completion",
    "Provider",
    "ProviderError",
    "UnknownModel",
    "known_specs",
    "register_family",
    "register_simulator",
    "resolve",
]
