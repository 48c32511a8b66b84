"""The recording proxy: an aiohttp server on 127.0.0.1 that forwards the OpenAI API to an upstream
and records ``/chat/completions`` calls while it passes them through.

aiohttp, not an ASGI app under uvicorn: it is already installed for the openai SDK's async transport,
and one library gives both the server and the streaming upstream client on one event loop.

Streamed answers are written to the client chunk by chunk as they arrive; the record is assembled
from the same bytes and written after the client has its last byte, so recording adds no wait.

It answers 403, forwarding nothing, to a request whose ``Host`` is not its own loopback address
(``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT``: a DNS-rebound name reaching it) or that
carries an ``Origin`` header (a web page in the user's browser; no agent's SDK sends one): either
would use the upstream's credentials on another site's behalf.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from sdbctl.recorders.conversation import SESSION_HEADER, ConversationRecorder
from sdbctl.recorders.proxy._stream import CompletionAssembler, SSEDecoder
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.redaction import url_without_secrets

DEFAULT_UPSTREAM = "https://api.openai.com/v1"

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy rewrites; never forwarded either way.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
# Asked of the upstream as identity, so the recorded bytes are the bytes passed on.
_REQUEST_DROP = _HOP | {"accept-encoding", SESSION_HEADER.lower()}
_RESPONSE_DROP = _HOP | {"content-encoding"}


def _model(request: Mapping[str, Any]) -> str:
    """The model spec of a proxied call, as ``sdbctl replay --model`` would name it."""
    return f"openai:{request.get('model') or 'unknown'}"


def check_upstream(url: str) -> str:
    """``url`` as an http(s) base URL without a trailing slash, or a one-line error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SdbError(f"upstream {url!r}: not an http(s) URL (e.g. https://api.openai.com/v1)")
    return url.rstrip("/")


class RecordingProxy:
    """``start()`` serves on a thread of its own; ``url`` is the base URL to give the agent."""

    def __init__(
        self, upstream: str, conversations: ConversationRecorder, *, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        # credentials in the upstream URL become a Basic Authorization header for requests that carry
        # none of their own (aiohttp refuses both at once); the URL kept has none
        parts = urlsplit(check_upstream(upstream))
        self._auth = (
            aiohttp.BasicAuth(unquote(parts.username), unquote(parts.password or "")).encode()
            if parts.username
            else None
        )
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.upstream = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        self._upstream_path = parts.path.rstrip("/")
        self.conversations = conversations
        self.host = host
        self.port = port
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self.grace = 5.0  # seconds a call still in flight at stop() may take to finish

    @property
    def url(self) -> str:
        """The OpenAI base URL of the proxy (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RecordingProxy:
        self._thread = threading.Thread(target=self._serve, name="sdb-proxy", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            error = self._startup_error
            if isinstance(error, OSError):
                raise SdbError(f"proxy: cannot listen on {self.host}:{self.port} ({error.strerror})") from None
            raise error
        return self

    def stop(self) -> None:
        """Finish the calls in flight, then stop serving."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        except (TimeoutError, concurrent.futures.TimeoutError):
            pass  # a handler that would not finish: the loop is stopped under it
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported by start() in the caller's thread
            self._startup_error = exc
            if self._client is not None:  # a port in use: close what started, so no warning follows
                loop.run_until_complete(self._client.close())
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._client = aiohttp.ClientSession(
            # no total limit (a long answer is fine), but an upstream silent for 10 minutes is dead
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        # calls in flight get a grace period, then are cancelled: each records its own error event
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    # -- forwarding ----------------------------------------------------------------------------

    def _target(self, request: web.Request) -> str:
        path = request.rel_url.path
        if path == "/v1" or path.startswith("/v1/"):
            path = path[3:]
        elif self._upstream_path and (path == self._upstream_path or path.startswith(self._upstream_path + "/")):
            path = path[len(self._upstream_path) :]
        query = request.rel_url.raw_query_string
        return self.upstream + path + (f"?{query}" if query else "")

    def _refusal(self, request: web.Request) -> str | None:
        """Why a request is not this machine's agent talking to the proxy (see the module docstring)."""
        if "Origin" in request.headers:
            return f"a request with an Origin header ({request.headers['Origin'][:100]!r}) is a web page's"
        host = request.headers.get("Host", "").lower()
        names = ("127.0.0.1", "localhost", "[::1]", self.host.lower())
        own = {f"{name}:{self.port}" for name in names} | (set(names) if self.port == 80 else set())
        if host not in own:
            return f"Host {host[:100]!r} is not this proxy's loopback address ({self.host}:{self.port})"
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:  # before the body is read: nothing reaches the upstream
            message = f"sdbctl proxy: refused: {refusal}"
            return web.json_response({"error": {"message": message, "type": "proxy_error"}}, status=403)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await self._forward(request)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP}
        headers["Accept-Encoding"] = "identity"  # else aiohttp asks for gzip, and we pass bytes on as they come
        if self._auth is not None and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = self._auth
        try:
            call = self._chat_call(request, body)
        except SdbError:  # a request canonical JSON cannot keep (NaN ...): forwarded, not recorded
            call = None
        started = time.perf_counter()
        assert self._client is not None
        try:
            upstream = await self._client.request(
                request.method, self._target(request), headers=headers, data=body, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            message = (
                f"sdbctl proxy: upstream {url_without_secrets(self.upstream)} unreachable ({type(exc).__name__}: {exc})"
            )
            if call is not None:
                self.conversations.failure(call[0], call[1], 502, {"error": message})
            return web.json_response({"error": {"message": message, "type": "proxy_error"}}, status=502)
        async with upstream:
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _RESPONSE_DROP:
                    out.headers.add(key, value)
            streamed = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            if streamed:
                out.enable_chunked_encoding()
            await out.prepare(request)
            decoder = SSEDecoder() if streamed and call is not None else None
            assembler = CompletionAssembler() if decoder is not None else None
            kept: list[bytes] = []
            try:
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                    if decoder is not None and assembler is not None:
                        for event in decoder.feed(chunk):
                            assembler.add_event(event)
                    elif call is not None:
                        kept.append(chunk)
            except asyncio.CancelledError:  # the client went away: aiohttp cancels the handler
                if call is not None:
                    self.conversations.failure(call[0], call[1], 499, {"error": "client disconnected mid-answer"})
                raise
            except (ConnectionResetError, aiohttp.ClientError) as exc:  # either side dropped mid-answer
                if call is not None:
                    self.conversations.failure(call[0], call[1], 502, {"error": f"connection lost mid-answer ({exc})"})
                return out
            await out.write_eof()
        if call is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            try:
                self._record(call, upstream.status, kept, decoder, assembler, latency_ms)
            except SdbError as exc:  # an answer that cannot be kept as it is: the call is noted, not lost
                self.conversations.session(call[0]).error("chat", f"answer not recorded: {exc}")
                self.conversations.errors += 1
        return out

    def _chat_call(self, request: web.Request, body: bytes) -> tuple[str, dict[str, Any]] | None:
        """(session, request) of a recordable chat-completions call, with its new tool results recorded."""
        if request.method != "POST" or not request.rel_url.path.rstrip("/").endswith("/chat/completions"):
            return None
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # passed on as is: the upstream's answer to it is the client's business
        if not isinstance(payload, dict):
            return None
        session = self.conversations.session_for(request.headers.get(SESSION_HEADER), payload)
        self.conversations.request(session, payload)
        return session, payload

    def _record(
        self,
        call: tuple[str, dict[str, Any]],
        status: int,
        kept: list[bytes],
        decoder: SSEDecoder | None,
        assembler: CompletionAssembler | None,
        latency_ms: float,
    ) -> None:
        session, payload = call
        if decoder is not None and assembler is not None:
            for event in decoder.close():
                assembler.add_event(event)
            if status >= 400 or assembler.errors:
                self.conversations.failure(session, payload, status, {"errors": assembler.errors})
                return
            self.conversations.answer(
                session, payload, assembler.completion(), model=_model(payload), latency_ms=latency_ms
            )
            return
        raw = b"".join(kept)
        try:
            answer: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            answer = raw.decode("utf-8", errors="replace")[:2000]
        if status >= 400 or not isinstance(answer, Mapping):
            self.conversations.failure(session, payload, status, answer)
            return
        self.conversations.answer(session, payload, answer, model=_model(payload), latency_ms=latency_ms)
