"""Models behind one async interface: a chat-completions request in, a response in the same shape out.

A provider is resolved from a model spec: ``sim:NAME@VERSION[?noise=X]`` (simulators registered by
the workloads), and, as the replay issue adds them, ``recorded``, ``openai:MODEL``,
``anthropic:MODEL`` and ``py:module:function``.

``tool_schema``, ``response_format``, ``chat_messages``, ``fit_history`` and ``as_openai`` are how
``llama:MODEL`` turns a chat request into what a small local model takes and its answer back (no model needed to
call them, and none of them imports llama.cpp): public so that this translation is pinned down
where it is cheap to, apart from the real models.

This module is the package's whole interface; its modules are private.
"""

from sdbctl.sdb.providers._base import Completion, Provider, ProviderError, UnknownModel
from sdbctl.sdb.providers._llama_format import as_openai, chat_messages, fit_history, response_format, tool_schema
from sdbctl.sdb.providers._registry import known_specs, register_family, register_simulator, resolve

__all__ = [
    "Completion",
    "Provider",
    "ProviderError",
    "UnknownModel",
    "as_openai",
    "chat_messages",
    "fit_history",
    "known_specs",
    "register_family",
    "register_simulator",
    "resolve",
    "response_format",
    "tool_schema",
]
