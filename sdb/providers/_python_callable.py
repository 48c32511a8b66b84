"""``py:module:function``: any sync or async callable that takes the request and returns a response
(a chat-completions dict, an Anthropic message dict, or plain text)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from sdbctl.sdb.providers._base import Completion, ProviderError, UnknownModel
from sdbctl.sdb.settings import import_from_cwd


class PythonCallable:
    def __init__(self, target: str, fn: Callable[..., Any]) -> None:
        self.spec = f"py:{target}"
        self.fn = fn

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        started = time.perf_counter()
        try:
            result = self.fn(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise ProviderError(f"{self.spec}: raised {type(exc).__name__}: {exc}", retryable=False) from None
        if isinstance(result, str):
            result = {"choices": [{"index": 0, "message": {"role": "assistant", "content": result}}]}
        if not isinstance(result, Mapping):
            raise ProviderError(f"{self.spec}: returned {type(result).__name__}, not a response", retryable=False)
        return Completion(dict(result), latency_ms=(time.perf_counter() - started) * 1000)


def make_python(target: str, params: dict[str, str]) -> PythonCallable:
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise UnknownModel(f"model spec 'py:{target}': use py:MODULE:FUNCTION")
    try:
        module = import_from_cwd(module_name)
    except ImportError as exc:
        raise UnknownModel(f"model spec 'py:{target}': cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UnknownModel(f"model spec 'py:{target}': {module_name} has no callable {attr!r}")
    return PythonCallable(target, fn)
