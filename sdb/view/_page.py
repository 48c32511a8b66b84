"""The page as one file (``diff --html`` / ``gate --html``): view.html with view.css and view.js inlined,
the data embedded as JSON, and a Content-Security-Policy that allows exactly that script and that style
by their sha256 hashes. The one renderer of the page's file; the server serves the same static files."""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson

from sdbctl.sdb.diff import DiffConfig, DiffResult
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.gate import Verdict
from sdbctl.sdb.store import Store
from sdbctl.sdb.view._data import ViewData

STATIC_TYPES: Final = {
    "view.html": "text/html; charset=utf-8",
    "view.css": "text/css; charset=utf-8",
    "view.js": "text/javascript; charset=utf-8",
}
"""Every file of the page, with its media type: the only names ever read from ``static/``."""

CSS_TAG: Final = '<link rel="stylesheet" href="/static/view.css">'
JS_TAG: Final = '<script src="/static/view.js"></script>'
MAX_ROWS: Final = 500  # sessions' rows the file embeds (the most severe first)
MAX_DETAILS: Final = 50  # sessions whose whole detail the file embeds
# what JSON inside <script> must not hold raw: markup (</script>, <!--), and, so that the data block is
# plain ASCII, every other character, among them U+2028/2029 and the control and bidi characters
_UNSAFE: Final = re.compile(r"[<>&\x7f-\U0010ffff]")
_OWN_CSP: Final = re.compile(r"<meta\s+http-equiv=[\"']?Content-Security-Policy[^>]*>", re.I)
_HEAD: Final = re.compile(r"<head(\s[^>]*)?>", re.I)


def static_text(name: str) -> str:
    """The text of the page's file ``name`` (a key of :data:`STATIC_TYPES`, nothing else) from the package."""
    if name not in STATIC_TYPES:
        raise KeyError(name)
    try:
        return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SdbError(f"the page's file static/{name} is missing from the installed sdbctl") from None


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def script_json(value: Any) -> str:
    """``value`` as JSON to put inside a ``<script>`` element: ``<``, ``>``, ``&`` and every non-ASCII
    character written as a ``\\uXXXX`` escape (the same value once parsed), so that no recorded
    ``</script>`` or ``<!--`` ends or changes the element."""
    return _UNSAFE.sub(_escape, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8"))


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def embedded(view: ViewData) -> dict[str, Any]:
    """What the file embeds: the header, the most severe :data:`MAX_ROWS` sessions' rows, the whole detail
    of every repeat of the most severe :data:`MAX_DETAILS`, and a note of what was left out."""
    header = view.header()
    page = view.sessions(offset=0, limit=MAX_ROWS)
    rows: list[dict[str, Any]] = page["rows"]
    total = int(page["total"])
    keys = [
        (row["session_id"], rep)
        for row in rows[:MAX_DETAILS]
        for rep in range(int((row.get("repeats") or {}).get("n") or 1))
    ]
    details = {f"{sid}#{rep}": detail for (sid, rep), detail in zip(keys, view.details(keys), strict=True)}
    command = shlex.join(["sdbctl", "view", header["base_run"], header["candidate_run"]])  # pastes as it is
    note = None
    if total > len(rows):
        note = f"{total - len(rows)} more sessions: run `{command}`"
    elif total > MAX_DETAILS:
        note = f"{total - MAX_DETAILS} more sessions' details: run `{command}`"
    return {"header": header, "sessions": rows, "details": details, "calls": {}, "limit_note": note}


def render_file(view: ViewData) -> str:
    """The page as one self-contained HTML file with ``view``'s data embedded: no request leaves it (its
    CSP allows its own script and style only, by hash, and images from data: URLs)."""
    page = static_text("view.html")
    css = static_text("view.css")
    js = static_text("view.js")
    for name, text, end in (("view.css", css, "</style"), ("view.js", js, "</script")):
        if end in text.lower():  # would end its element early
            raise SdbError(f"the page's file static/{name} holds {end}: it cannot be inlined")
    for tag in (CSS_TAG, JS_TAG):
        if page.count(tag) != 1:
            raise SdbError(f"the page's file static/view.html must hold {tag} exactly once")
    csp = (
        f"default-src 'none'; script-src '{_sha256(js)}'; style-src '{_sha256(css)}'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    data = f'<script type="application/json" id="sdb-data">{script_json(embedded(view))}</script>'
    page = _OWN_CSP.sub("", page)
    head = _HEAD.search(page)
    if head is None:
        raise SdbError("the page's file static/view.html has no <head>")
    meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
    page = page[: head.end()] + meta + page[head.end() :]
    # str.replace's replacement is literal text: nothing in the data or the code is read as a pattern
    page = page.replace(CSS_TAG, f"<style>{css}</style>", 1)
    return page.replace(JS_TAG, f"{data}<script>{js}</script>", 1)


def write_file(
    path: Path, store: Store, result: DiffResult, verdict: Verdict | None = None, *, config: DiffConfig | None = None
) -> None:
    """Write :func:`render_file` of ``result`` (with the gate's ``verdict``, if any) to ``path``: what
    ``diff --html`` and ``gate --html`` write; ``config``: the one the diff was computed with (default:
    the project's), so that a session's detail is explained with the same tolerances."""
    view = ViewData.for_diff(store, result, verdict, config=config)
    try:
        text = render_file(view)
    finally:
        view.close()
    path.write_text(text, encoding="utf-8")
