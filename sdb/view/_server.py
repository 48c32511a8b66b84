"""The local server of ``sdbctl view``: the standard library's threading HTTP server on 127.0.0.1, one
random token per process, and answers from one :class:`ViewData`.

What keeps another site or another user out: the socket is bound to the loopback interface only; a
request whose ``Host`` is not ``127.0.0.1:PORT`` or ``localhost:PORT`` is refused (DNS rebinding); the
page and the data need the token (query ``token=`` or header ``X-Sdb-Token``, compared in constant
time); every answer carries a Content-Security-Policy that allows this origin's script and style only.
No path of a URL reaches the file system: the two static files are looked up by name in a fixed table."""

from __future__ import annotations

import errno
import hmac
import html
import os
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson

from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.text import visible
from sdbctl.sdb.view._data import ViewData
from sdbctl.sdb.view._page import STATIC_TYPES, static_text

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PUBLIC: Final = {"/static/view.js": "view.js", "/static/view.css": "view.css"}  # no data in them: no token
_JSON: Final = "application/json"


class _Refused(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Answer = tuple[int, bytes, str]


class ViewServer(ThreadingHTTPServer):
    """The server of one view: bound at construction (``port`` 0: a free one), serving once
    :meth:`serve_forever` runs. ``url`` is the page's address with the token."""

    daemon_threads = True

    def __init__(self, view: ViewData, *, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"--port must be 0 (a free port) or a port number up to 65535, not {port}")
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise UsageError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {why}") from None
        self.view = view
        self.token = secrets.token_urlsafe(32)
        self.port = int(self.server_address[1])
        self.hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self.lock = threading.Lock()  # one question to the view (and its DuckDB connection) at a time

    @property
    def url(self) -> str:
        """The page's address, with the token."""
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def answer(self, method: str, target: str, headers: Any) -> Answer:
        """The status, body and media type for one request (the handler's logic, apart from its socket)."""
        if headers.get("Host", "") not in self.hosts:
            raise _Refused(403, "this server answers requests to 127.0.0.1 or localhost on its own port only")
        if method not in ("GET", "HEAD"):
            raise _Refused(405, f"method {method} is not allowed")
        parts = urlsplit(target)
        path = parts.path
        if path in _PUBLIC:
            name = _PUBLIC[path]
            return 200, static_text(name).encode("utf-8"), STATIC_TYPES[name]
        query = parse_qs(parts.query, keep_blank_values=True)
        given = headers.get("X-Sdb-Token") or _one(query, "token") or ""
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode("ascii")):
            raise _Refused(403, "a token is needed: open the URL sdbctl view printed")
        if path == "/":
            return 200, static_text("view.html").encode("utf-8"), STATIC_TYPES["view.html"]
        route = _ROUTES.get(path)
        if route is None:
            raise _Refused(404, "no such page")
        ask, usage_status = route
        try:
            with self.lock:
                value = ask(self.view, query)
        except UsageError as exc:
            raise _Refused(usage_status, str(exc)) from None
        return 200, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS), _JSON


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _needed(query: dict[str, list[str]], name: str) -> str:
    value = _one(query, name)
    if value is None:
        raise _Refused(400, f"the parameter {name} is needed")
    return value


def _int(query: dict[str, list[str]], name: str, default: int | None = None) -> int:
    value = _one(query, name)
    if value is None or value == "":
        if default is None:
            raise _Refused(400, f"the parameter {name} is needed")
        return default
    try:
        number = int(value)
    except ValueError:
        raise _Refused(400, f"the parameter {name} must be a whole number, not {value!r}") from None
    if not 0 <= number <= _LARGEST:
        raise _Refused(400, f"the parameter {name} must be a whole number from 0 to {_LARGEST}, not {value[:40]}")
    return number


_LARGEST: Final = 2**62  # an offset or seq beyond what a query's integer holds is refused, not a 500


def _sessions(view: ViewData, q: dict[str, list[str]]) -> dict[str, Any]:
    return view.sessions(
        offset=_int(q, "offset", 0),
        limit=_int(q, "limit", 200),
        layer=_one(q, "layer") or None,
        reason=_one(q, "reason") or None,
        action=_one(q, "action") or None,
        outcome=_one(q, "outcome") or None,
        text=_one(q, "text") or None,
        differ_only=_one(q, "differ_only") in ("1", "true"),
    )


_ROUTES: Final[dict[str, tuple[Callable[[ViewData, dict[str, list[str]]], dict[str, Any]], int]]] = {
    # path: (the question, the status of a UsageError it raises: a bad filter 400, an unknown id 404)
    "/api/header": (lambda v, q: v.header(), 400),
    "/api/sessions": (_sessions, 400),
    "/api/session": (lambda v, q: v.session(_needed(q, "id"), _int(q, "rep", 0)), 404),
    "/api/call": (lambda v, q: v.call(_needed(q, "side"), _needed(q, "id"), _int(q, "rep", 0), _int(q, "seq")), 404),
}


class _Handler(BaseHTTPRequestHandler):
    """One request: :meth:`ViewServer.answer`, or its refusal, or a 500 for an error of ours (logged once
    on stderr, the server goes on). Nothing is logged per request."""

    server: ViewServer
    server_version = "sdbctl"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 60

    def _respond(self) -> None:
        try:
            status, body, media = self.server.answer(self.command, self.path, self.headers)
        except _Refused as exc:
            status, body, media = exc.status, orjson.dumps({"error": str(exc)}), _JSON
        except Exception as exc:  # a bug or a damaged store: this request fails, the server goes on
            line = visible(" ".join(f"{type(exc).__name__}: {exc}".split()))
            sys.stderr.write(f"sdbctl view: error answering {visible(urlsplit(self.path).path)}: {line}\n")
            sys.stderr.flush()
            status, body, media = 500, orjson.dumps({"error": line}), _JSON
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _respond

    def end_headers(self) -> None:
        """Every answer, an error the standard library sends itself too, carries the security headers."""
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """No request log: stdout holds the URL only, and stderr the errors."""


def redirect_file(url: str) -> Path:
    """A page, readable by this user only (mode 0600), that sends the browser to ``url``: what the
    browser is opened on, so that the token is never on a command line (another user's ``ps`` would
    read it there), as Jupyter does. The caller deletes it when the server stops."""
    fd, name = tempfile.mkstemp(prefix="sdbctl-view-", suffix=".html")
    link = html.escape(url, quote=True)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(
            f'<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
            f'<meta http-equiv="refresh" content="0;url={link}"><p><a href="{link}">sdbctl view</a></p>\n'
        )
    return Path(name)
