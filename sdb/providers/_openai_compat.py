"""Real models: any OpenAI-compatible server through the official ``openai`` SDK, and Anthropic's
Messages API through the ``anthropic`` SDK (the optional extra ``sdbctl[anthropic]``).

Only standard chat-completions fields are sent, and tool calls, content and usage are read from their
standard places, so vLLM, Ollama and LiteLLM behave like OpenAI. The SDKs' own retries are off: the
replay engine retries, honouring ``Retry-After``. The raw JSON the server returned is what is kept.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Any

from sdbctl.sdb.providers._base import Completion, ProviderError, UnknownModel

# The request fields an OpenAI-compatible server is expected to understand.
STANDARD_FIELDS = (
    "messages",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "response_format",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "parallel_tool_calls",
)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _http_client(sdk: Any) -> Any:
    """The SDK's aiohttp transport (the ``openai[aiohttp]`` extra) when it is installed: it costs about
    half the CPU per call of the default httpx pool at 50 concurrent calls. None: the SDK's default."""
    try:
        import aiohttp  # noqa: F401

        return sdk.DefaultAioHttpClient()
    except (ImportError, AttributeError, RuntimeError):
        return None


def _provider_error(spec: str, exc: Exception, *, sdk: Any, busy: tuple[int, ...]) -> ProviderError:
    """An SDK's error as a :class:`ProviderError`: HTTP statuses ``busy`` and 5xx, timeouts and
    connection errors are retryable (the two SDKs share these class names)."""
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        said = error.get("message") if isinstance(error, dict) else None
        return ProviderError(
            f"{spec}: HTTP {status}: {str(said or exc)[:300]}",
            retryable=status in busy or status >= 500,
            retry_after=_retry_after(exc.response.headers),
            status=status,
        )
    kind, detail = connection_cause(exc)
    return ProviderError(f"{spec}: {kind} ({detail})" if detail else f"{spec}: {kind}", retryable=True, kind=kind)


def connection_cause(exc: BaseException) -> tuple[str, str]:
    """The real cause of a failed connection, from the chain of exceptions an SDK wraps: an SDK says
    "timed out" or "connection error" for a refused port, a failed DNS lookup and a bad certificate
    alike. Returns (kind, detail)."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for e in chain:
        errno_ = getattr(e, "errno", None)
        if isinstance(e, ConnectionRefusedError) or errno_ == 111:
            return "connection refused", str(e)
        if isinstance(e, socket.gaierror):
            return "DNS lookup failed", str(e)
        if isinstance(e, ssl.SSLError):
            return "TLS error", str(e)
        inner = getattr(e, "os_error", None)  # aiohttp's ClientConnectorError holds the OSError
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused", str(e)
        if isinstance(inner, socket.gaierror):
            return "DNS lookup failed", str(e)
        if isinstance(inner, ssl.SSLError):
            return "TLS error", str(e)
    for e in chain:
        if isinstance(e, TimeoutError) or type(e).__name__ in ("APITimeoutError", "ReadTimeout", "ConnectTimeout"):
            return "timeout", ""
    root = chain[-1]
    return "cannot connect", f"{type(root).__name__}: {root}"


def _timeout(params: Mapping[str, str]) -> float:
    try:
        return float(params.get("timeout", "60"))
    except ValueError:
        raise UnknownModel(f"timeout must be a number of seconds, not {params.get('timeout')!r}") from None


class OpenAICompatible:
    """``openai:MODEL``: chat completions on any OpenAI-compatible server."""

    def __init__(self, model: str, params: Mapping[str, str]) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - openai is a core dependency
            raise UnknownModel("openai:MODEL needs the openai package") from None
        self._openai = openai
        self.model = model
        self.spec = f"openai:{model}"
        base_url = params.get("base_url") or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.endpoint = base_url  #: where requests go (the response cache keys its answers by it)
        api_key = os.environ.get("OPENAI_API_KEY") or ("sk-no-key" if "base_url" in params else None)
        if api_key is None:
            raise UnknownModel("openai:MODEL needs OPENAI_API_KEY (or --base-url for a local server)")
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=_timeout(params),
            http_client=_http_client(openai),
        )

    async def aclose(self) -> None:
        await self.client.close()

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        body = {k: request[k] for k in STANDARD_FIELDS if k in request}
        openai = self._openai
        started = time.perf_counter()
        try:
            # the SDK's own POST (auth, base URL, typed errors) without its per-call TypedDict transform of
            # the messages and tools (~1.7 ms of CPU a call, measured): the body is plain JSON already
            text = await self.client.post("/chat/completions", body={"model": self.model, **body}, cast_to=str)
            data = json.loads(text)
        except (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise _provider_error(self.spec, exc, sdk=openai, busy=(429,)) from None
        except json.JSONDecodeError as exc:
            raise ProviderError(f"{self.spec}: answer is not JSON ({exc.msg})", retryable=False) from None
        except (TypeError, ValueError) as exc:  # the SDK refusing the request it was given
            raise ProviderError(f"{self.spec}: request refused by the SDK ({exc})", retryable=False) from None
        return Completion(data, latency_ms=(time.perf_counter() - started) * 1000)


def _to_anthropic(request: Mapping[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI-shaped request as a Messages API request."""
    system = [m["content"] for m in request.get("messages", []) if m.get("role") == "system"]
    messages: list[dict[str, Any]] = []
    for m in request.get("messages", []):
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": str(m.get("content"))}
            messages.append({"role": "user", "content": [block]})
        elif role == "assistant" and m.get("tool_calls"):
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            for call in m["tool_calls"]:
                args = call["function"].get("arguments") or "{}"
                try:
                    parsed = json.loads(args) if isinstance(args, str) else args
                except json.JSONDecodeError:
                    parsed = {"_raw": args}
                blocks.append(
                    {"type": "tool_use", "id": call.get("id"), "name": call["function"]["name"], "input": parsed}
                )
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": role, "content": m.get("content") or ""})
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": request.get("max_tokens", 1024)}
    if system:
        out["system"] = "\n\n".join(str(s) for s in system)
    if request.get("tools"):
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters", {"type": "object"}),
            }
            for t in request["tools"]
            if "function" in t
        ]
    return out


class AnthropicMessages:
    """``anthropic:MODEL``: the Messages API; the raw Messages answer is kept (the boundary reads
    ``tool_use`` blocks)."""

    def __init__(self, model: str, params: Mapping[str, str]) -> None:
        try:
            import anthropic
        except ImportError:
            raise UnknownModel("anthropic:MODEL needs the optional extra: pip install 'sdbctl[anthropic]'") from None
        self._anthropic = anthropic
        self.model = model
        self.spec = f"anthropic:{model}"
        base_url = params.get("base_url") or os.environ.get("ANTHROPIC_BASE_URL")
        self.endpoint = base_url or "https://api.anthropic.com"  #: where requests go (see OpenAICompatible)
        api_key = os.environ.get("ANTHROPIC_API_KEY") or ("no-key" if base_url else None)
        if api_key is None:
            raise UnknownModel("anthropic:MODEL needs ANTHROPIC_API_KEY (or --base-url for a local server)")
        self.client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=_timeout(params)
        )

    async def aclose(self) -> None:
        await self.client.close()

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        anthropic = self._anthropic
        started = time.perf_counter()
        try:
            raw = await self.client.messages.with_raw_response.create(**_to_anthropic(request, self.model))
            data = json.loads(raw.http_response.text)
        except (anthropic.APIStatusError, anthropic.APITimeoutError, anthropic.APIConnectionError) as exc:
            raise _provider_error(self.spec, exc, sdk=anthropic, busy=(429, 529)) from None
        except (TypeError, ValueError) as exc:  # the SDK refusing the request it was given
            raise ProviderError(f"{self.spec}: request refused by the SDK ({exc})", retryable=False) from None
        return Completion(data, latency_ms=(time.perf_counter() - started) * 1000)


def make_openai(model: str, params: dict[str, str]) -> OpenAICompatible:
    return OpenAICompatible(model, params)


def make_anthropic(model: str, params: dict[str, str]) -> AnthropicMessages:
    return AnthropicMessages(model, params)
