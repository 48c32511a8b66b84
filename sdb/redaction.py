"""Secret and personal-data redaction, applied to payloads before they reach a store.

Rules are regular expressions; a match is replaced by ``[REDACTED:<rule>]``, or only its group
named ``secret`` when it has one (``x-api-key: [REDACTED:api_key_header]``: the context stays
readable). The defaults catch the usual API-key and token shapes, credentials in URLs and headers,
private-key blocks and e-mail addresses. ``[tool.sdbctl.redact]`` in ``pyproject.toml`` (or
``[redact]`` in ``sdbctl.toml``) switches defaults off and adds rules::

    [tool.sdbctl.redact]
    defaults = true                    # or false, or a list of default rule names to keep
    [tool.sdbctl.redact.rules]
    customer_id = "CUST-[0-9]{6}"

Headers are never recorded at all: redaction is for the text inside request and response bodies.
"""

from __future__ import annotations

import functools
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.events import plain_json, shared_prefix
from sdbctl.sdb.events._canonical import json_default
from sdbctl.sdb.settings import read_table

# keys whose text value is a credential, whatever its shape: in a JSON (or Python) text, and as the key of
# a payload's mapping (a tool's arguments) under the rule secret_field
_SECRET_KEYS = r"api[_-]?key|(?:access|refresh|auth|id)[_-]?token|(?:client[_-]?)?secret|password|passwd"
_SECRET_KEY = re.compile(rf"(?i:{_SECRET_KEYS})")
_PLAIN = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a payload's key names a credential (its text value is then redacted whole)."""
    return _SECRET_KEY.fullmatch(key) is not None


SECRET_FIELD = "secret_field"

DEFAULT_RULES: dict[str, str] = {
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}",
    "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    "google_api_key": r"\bAIza[0-9A-Za-z_\-]{35}",
    "slack_token": r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    "bearer_token": r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*",
    # after an Authorization header's name, or a header value on its own (not "basic" in prose)
    "basic_auth": r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:basic)\s+(?P<secret>[A-Za-z0-9+/]{4,}=*)"
    r"|^(?i:basic)\s+(?P<value>[A-Za-z0-9+/]{4,}=*)$",
    "url_credentials": r"(?<=://)(?P<secret>[^\s/?#@:\[\]]*:[^\s/?#@]+)(?=@)",
    "stripe_key": r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
    "aws_secret_key": r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
    r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
    "huggingface_token": r"\bhf_[A-Za-z0-9]{30,}",
    # the whole block, or to the end of the text when it was cut before its END line
    "private_key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    "api_key_header": r"(?i)\b(?:(?:x-)?api-key|ocp-apim-subscription-key)[\"']?\s*:\s*[\"']?(?P<secret>[^\s\"',;]+)",
    # in a query, or in a fragment (where implicit OAuth puts its access_token)
    "api_key_param": r"(?i)[?&#](?:api(?:[_-]|%5F|%2D)?key|(?:access|auth|id|refresh)[_-]?token|token|key"
    r"|(?:client[_-]?)?secret|password|passwd|auth|sig"
    r"|x-amz-signature|x-amz-security-token)=(?P<secret>[^\s&#\"'<>]+)",
    # a form body's (or a query's first) credential: the names that are one whatever precedes them
    "form_secret": r"(?i)(?<![A-Za-z0-9_%.\-])(?:password|passwd|client[_-]?secret|api(?:[_-]|%5F)?key)="
    r"(?P<secret>(?!\[REDACTED)[^\s&#\"'<>]+)",
    # a presigned URL's parameters written out of a query (X-Amz-Credential's key id: aws_access_key)
    "aws_presigned": r"(?i)\bx-amz-(?:signature|security-token)=(?P<secret>(?!\[REDACTED)[^\s&#\"'<>]+)",
    # "api_key": "...", 'password': '...': the whole quoted value (escaped quotes inside it too)
    SECRET_FIELD: rf"(?i)[\"'](?:{_SECRET_KEYS})[\"']\s*:\s*"
    r"(?:\"(?P<secret>(?!\[REDACTED)(?:[^\"\\]|\\.)+)\"|'(?P<value>(?!\[REDACTED)(?:[^'\\]|\\.)+)')",
    # Authorization: Token ... (and a Bearer token shorter than bearer_token's), as a header or a JSON field
    "authorization_token": r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:token|bearer)\s+"
    r"(?P<secret>[^\s\"',;\[][^\s\"',;]*)",
    # a Cookie or Set-Cookie header's value: from its first NAME=VALUE to the end of the line or quote
    "cookie_header": r"(?i)\b(?:set-)?cookie[\"']?\s*:\s*[\"']?(?P<secret>[^\s=;\"']+=[^\r\n\"']*)",
    "slack_webhook": r"\bhooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/\-]{8,})",
    "gitlab_token": r"\bgl(?:pat|dt|rt|ptt|cbt|ft|imt|oas|soat)-[A-Za-z0-9_\-]{20,}",
    "npm_token": r"\bnpm_[A-Za-z0-9]{36}\b",
    "sendgrid_key": r"\bSG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}",
    "groq_key": r"\bgsk_[A-Za-z0-9]{20,}",
    # starts only where a run of address characters starts: linear, however long the text
    "email": r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
}


@dataclass(frozen=True)
class Redactor:
    """Compiled rules; ``redact`` returns a copy of a JSON value with every string redacted."""

    rules: tuple[tuple[str, re.Pattern[str]], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.rules]

    @functools.cached_property
    def _subs(self) -> tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]:
        return tuple((pattern, _replacement(name, pattern)) for name, pattern in self.rules)

    @functools.cached_property
    def _any(self) -> _Prefilter | None:
        """What finds wherever any rule could match (:func:`_maybe_secret`), or None."""
        return _maybe_secret([pattern for _, pattern in self.rules])

    @functools.cached_property
    def _loose(self) -> _Prefilter | None:
        """:attr:`_any` when it is RE2's over the loosened rules (which finds a rule's match inside a
        JSON text too), else None."""
        found = self._any
        return found if found is not None and found.loose else None

    @functools.cached_property
    def _fields(self) -> bool:
        return any(name == SECRET_FIELD for name, _ in self.rules)

    @functools.cached_property
    def _short(self) -> dict[str, str]:
        """Short texts already redacted: a log's keys and small values come back thousands of times."""
        return {}

    def text(self, value: str) -> str:
        short = len(value) <= 64
        if short:
            done = self._short.get(value)
            if done is not None:
                return done
        original = value
        found = self._any
        if found is None or found.hit(value):
            for pattern, replacement in self._subs:
                value = pattern.sub(replacement, value)
        if short:
            if len(self._short) >= 65_536:
                self._short.clear()
            self._short[original] = value
        return value

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with every string (and key) redacted; a structure whose JSON text no
        rule can match anywhere (:func:`_maybe_secret`, over its strings as they are: a text with no
        escape) is returned as it is, unwalked."""
        if not self.rules:
            return value
        kind = type(value)
        if kind is dict and len(value) <= 8 and all(type(v) in _FLAT for v in value.values()):
            return self._walk(value)  # a chat message: a few texts, each searched once, is cheaper
        if kind is dict or kind is list:
            found = self._loose
            text = plain_json(value) if found is not None else None
            if text is not None and found is not None and not found.hit(text):
                if b"\\" not in text:
                    return value
                plain = _strings_as_they_are(text)  # a string's text as it is, besides as JSON writes it
                if plain is not None and not found.hit(plain):
                    return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN:  # numbers, booleans and null: nothing to redact, the common case first
            return value
        if kind is str or isinstance(value, str):
            return self.text(value)
        if kind is dict or isinstance(value, Mapping):  # keys too: a tool's result may be keyed by an address
            fields, text, redact, out = self._fields, self.text, self._walk, {}
            for k, v in value.items():
                if type(k) is str or isinstance(k, str):
                    if fields and isinstance(v, str) and v and _secret_key(k):
                        out[text(k)] = f"[REDACTED:{SECRET_FIELD}]"
                        continue
                    k = text(k)
                out[k] = v if type(v) in _PLAIN else redact(v)
            return out
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            redact = self._walk
            return [v if type(v) in _PLAIN else redact(v) for v in value]
        if isinstance(value, int | float):
            return value
        try:  # a pydantic model, a dataclass, a set ...: redacted as the JSON value it is written as
            return self._walk(json_default(value))
        except TypeError:
            return value


_FLAT: Final = _PLAIN | {str}  # a flat message's values
_ESCAPES: Final = ((b'\\"', b'"'), (b"\\n", b"\n"), (b"\\r", b"\r"), (b"\\t", b"\t"), (b"\\b", b"\b"), (b"\\f", b"\f"))


def _strings_as_they_are(text: bytes) -> bytes | None:
    """orjson's JSON ``text`` with its strings' escapes undone, so that each string (and key) of the
    value is in it as it is, character for character: a rule loosened to match anywhere
    (:func:`_loosened`) then matches in it wherever it matches in one of them (a rule on a JSON field,
    such as ``secret_field``, matches in the text as written). The escapes orjson writes for
    backslashes, quotes and named controls are undone (a text cut at its escaped backslashes, which
    pair up from the left, so each piece's escapes are read alone); None (walk the value instead)
    for a ``\\u`` escape (a control character), whose undoing would need a parser."""
    if b"\\u" in text:
        return None
    pieces = text.split(b"\\\\")
    for i, piece in enumerate(pieces):
        if b"\\" in piece:
            for escaped, plain in _ESCAPES:
                piece = piece.replace(escaped, plain)
            pieces[i] = piece
    return b"\\".join(pieces)


def _group_end(source: str, start: int) -> int:
    """The index of the ``)`` that closes the group opened at ``source[start]`` (escapes and
    character classes skipped); -1 when there is none."""
    depth, i, in_class = 0, start, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if source[i + 1 : i + 2] == "]" or source[i + 1 : i + 3] == "^]" else 1
            i += 1 if source[i - 1 : i] == "^" and source[i : i + 1] == "]" else 0
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


# Python's ``re`` reads \s, \d and \w as Unicode classes, RE2 as ASCII ones: spelled out for RE2
_SPACES = r"\s\x0b\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_RE2_CLASS = {"\\s": _SPACES, "\\d": r"\p{Nd}", "\\w": r"\p{L}\p{N}\p{M}_"}


def _loosened(source: str) -> str | None:
    r"""``source`` for RE2, with what only narrows a match taken out: lookarounds, word boundaries and
    anchors dropped (a positive lookbehind that opens the rule, and a positive lookahead that ends
    it, kept as part of the match: they are beside it in the text), named groups made plain, and
    ``\s``, ``\d``, ``\w`` spelled out as Python reads them. It matches in any text that holds a
    match of the rule (None: it could not be done)."""
    if re.search(r"\\[1-9]|\(\?P=", source):
        return None  # a back-reference: groups cannot be renumbered
    out, i, in_class = [], 0, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            two = source[i : i + 2]
            if in_class:
                if two in ("\\S", "\\D", "\\W"):
                    return None  # ASCII in RE2: narrower than Python's inside a class
                out.append(_RE2_CLASS.get(two, two))
            elif two in ("\\b", "\\B", "\\A", "\\Z", "\\z"):
                pass
            else:
                out.append(f"[{_RE2_CLASS[two]}]" if two in _RE2_CLASS else two)
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            end = i + 1 + (source[i + 1 : i + 2] == "^")
            end += source[end : end + 1] == "]"  # a ] first in a class is a character
            out.append(source[i:end])
            i = end
            continue
        if c in "^$":  # anchors: a rule's match inside a longer text (a JSON text) is found too
            i += 1
            continue
        if source.startswith(("(?=", "(?<=", "(?!", "(?<!"), i):
            end = _group_end(source, i)
            if end < 0:
                return None
            opening = (i == 0 and source.startswith("(?<=", i)) or (
                end == len(source) - 1 and source.startswith("(?=", i)
            )
            if opening:  # beside the match, at its edge: consumed, it is in the text too
                out.append("(?:")
                i += 3 if source.startswith("(?=", i) else 4
            else:
                i = end + 1
            continue
        if source.startswith("(?P<", i):
            close = source.find(">", i)
            if close < 0:
                return None
            out.append("(?:")
            i = close + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


class _Prefilter:
    """One pattern that matches wherever any rule could: RE2's over the loosened rules (``loose``:
    it matches inside a JSON text too, read as UTF-8 bytes), else Python's over the rules as they
    are (text only). It only answers whether there is a match: RE2 is asked directly, without its
    Python wrapper's work of turning byte offsets into character offsets (most of a search's cost)."""

    __slots__ = ("_anchor", "_match", "_pattern", "loose")

    def __init__(self, pattern: Any, *, loose: bool) -> None:
        self._pattern = pattern
        self.loose = loose
        regexp = getattr(pattern, "_regexp", None) if loose else None
        anchor = getattr(getattr(sys.modules.get("re2"), "_Anchor", None), "UNANCHORED", None)
        self._match = regexp.Match if regexp is not None and anchor is not None else None
        self._anchor = anchor

    def hit(self, text: str | bytes) -> bool:
        if self._match is not None:
            data = text.encode() if isinstance(text, str) else text
            return bool(self._match(self._anchor, data, 0, len(data))[0][0] >= 0)
        return self._pattern.search(text if isinstance(text, str) else text.decode()) is not None


def _maybe_secret(patterns: list[re.Pattern[str]]) -> _Prefilter | None:
    """One pattern that matches wherever any of ``patterns`` could, found in one pass: RE2 (linear
    time, ~50x Python's ``re`` on these rules) over the rules loosened to what RE2 reads
    (:func:`_loosened`), else Python's ``re`` over the rules side by side; None when neither can be
    built. A text it does not match is one no rule changes: it only spares the rules' passes.
    Python's ``re`` keeps the rules' anchors, so it is never used over a JSON text (the caller
    checks the module of what it gets)."""
    parts, strict = [], []
    for pattern in patterns:
        source = re.sub(r"^\(\?[aiLmsux]+\)", "", pattern.pattern)  # its flags, scoped below
        flags = "".join(f for f, bit in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)) if pattern.flags & bit)
        scope = f"(?{flags}:" if flags else "(?:"
        loose = _loosened(source)
        parts.append(None if loose is None else scope + loose + ")")
        strict.append(scope + re.sub(r"\(\?P<\w+>", "(?:", source) + ")")
    if not patterns:
        return None
    if all(p is not None for p in parts):
        try:
            import re2  # type: ignore[import-untyped]

            options = re2.Options()
            options.log_errors = False  # a rule RE2 cannot read falls back, silently
            return _Prefilter(re2.compile("|".join(p for p in parts if p is not None), options), loose=True)
        except Exception:
            pass
    if any(re.search(r"\\[1-9]|\(\?P=", p.pattern) for p in patterns):
        return None
    try:
        return _Prefilter(re.compile("|".join(strict)), loose=False)
    except re.error:
        return None


def _replacement(name: str, pattern: re.Pattern[str]) -> str | Callable[[re.Match[str]], str]:
    """What a match of rule ``name`` becomes: ``[REDACTED:name]`` in place of the whole match, or of
    its group ``secret`` (or ``value``, for a second alternative) when the rule has one and it took
    part in the match, so that what names the secret stays readable."""
    tag = f"[REDACTED:{name}]"
    groups = [g for g in ("secret", "value") if g in pattern.groupindex]
    if not groups:
        return tag

    def replace(match: re.Match[str]) -> str:
        whole, start = match.group(), match.start()
        for group in groups:
            if match.start(group) >= 0:
                return whole[: match.start(group) - start] + tag + whole[match.end(group) - start :]
        return tag

    return replace


def build(rules: Mapping[str, str], origin: str) -> Redactor:
    compiled = []
    for name, pattern in rules.items():
        if not isinstance(pattern, str):
            raise SdbError(f"{origin}: redaction rule {name!r} must be a regular expression string")
        try:
            compiled.append((name, re.compile(pattern)))
        except re.error as exc:
            raise SdbError(f"{origin}: redaction rule {name!r} is not a valid regular expression ({exc})") from None
    return Redactor(tuple(compiled))


def load_redactor(directory: Path | None = None) -> Redactor:
    """The redaction rules configured in the current directory (the defaults when none are)."""
    table, origin = read_table("redact", directory)
    where = origin or "[tool.sdbctl.redact]"
    unknown = set(table) - {"defaults", "rules", "sdk"}
    if unknown:
        raise SdbError(f"{where}: unknown redact key(s) {', '.join(sorted(unknown))} (keys: defaults, rules, sdk)")
    if not isinstance(table.get("sdk", False), bool):
        raise SdbError(f"{where}: redact.sdk must be true or false")
    defaults = table.get("defaults", True)
    if defaults is True:
        rules = dict(DEFAULT_RULES)
    elif defaults is False:
        rules = {}
    elif isinstance(defaults, list) and all(isinstance(d, str) for d in defaults):
        bad = sorted(set(defaults) - set(DEFAULT_RULES))
        if bad:
            raise SdbError(f"{where}: no default redaction rule {', '.join(bad)} ({', '.join(DEFAULT_RULES)})")
        rules = {name: DEFAULT_RULES[name] for name in defaults}
    else:
        raise SdbError(f"{where}: redact.defaults must be true, false or a list of rule names")
    extra = table.get("rules", {})
    if not isinstance(extra, Mapping):
        raise SdbError(f'{where}: redact.rules must be a table of NAME = "REGEX"')
    rules.update(extra)
    return build(rules, where)


class HistoryRedactor:
    """One conversation's requests redacted one after another: a request repeats its history, whose
    items were redacted with the call before, so only the new items of each list are redacted again
    (redaction is per value, so the result is what :meth:`Redactor.redact` gives for the whole)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._lists: dict[str, tuple[list[Any], list[Any]]] = {}  # key -> (items as given, redacted)
        self._known: dict[int, tuple[Any, Any]] = {}  # id -> (a value redacted already, its redaction)

    def remember(self, value: Any, redacted: Any) -> None:
        """``value`` (an answer's message, which the next request holds again) is redacted already.
        Only the last few are kept: a proxied request is parsed anew, and never holds them."""
        if len(self._known) >= 16:
            self._known.clear()
        self._known[id(value)] = (value, redacted)

    def _item(self, item: Any) -> Any:
        known = self._known.pop(id(item), None)
        return known[1] if known is not None and known[0] is item else self.redactor.redact(item)

    def redact(self, request: Any) -> Any:
        r = self.redactor
        if not r.rules or not isinstance(request, Mapping):
            return r.redact(request)
        lists = {k: v for k, v in request.items() if type(k) is str and type(v) is list}
        out = r.redact({k: v for k, v in request.items() if k not in lists})
        for key, items in lists.items():
            before, done = self._lists.get(key, ([], []))
            n = shared_prefix(before, items)
            redacted = done[:n] + [self._item(item) for item in items[n:]]
            self._lists[key] = (items, redacted)
            out[r.text(key)] = redacted
        return out


class RedactingSession:
    """A recorder session whose recorded values pass through a :class:`Redactor` first: the in-process
    SDK's redaction, opt-in (``Recorder(redact=True)`` or ``sdk = true`` under ``[tool.sdbctl.redact]``).
    Names, steps and statuses are the caller's code, not data, and are recorded as given."""

    def __init__(self, session: Any, redactor: Redactor) -> None:
        self._session = session
        self._redactor = redactor

    def input(self, name: str, payload: Any, **kw: Any) -> int:
        return int(self._session.input(name, self._redactor.redact(payload), **kw))

    def llm(self, request: Any, response: Any, **kw: Any) -> int:
        if kw.get("variables") is not None:
            kw["variables"] = self._redactor.redact(kw["variables"])
        return int(self._session.llm(self._redactor.redact(request), self._redactor.redact(response), **kw))

    def action(self, name: str, args: Any, **kw: Any) -> int:
        return int(self._session.action(name, self._redactor.redact(args), **kw))

    def gate(self, name: str, decision: Any, reason: str | None = None, **kw: Any) -> int:
        return int(self._session.gate(name, decision, self._redactor.redact(reason), **kw))

    def effect(self, name: str, result: Any, **kw: Any) -> int:
        return int(self._session.effect(name, self._redactor.redact(result), **kw))

    def state(self, name: str, payload: Any, **kw: Any) -> int:
        return int(self._session.state(name, self._redactor.redact(payload), **kw))

    def error(self, name: str, message: str, **kw: Any) -> int:
        if kw.get("detail") is not None:
            kw["detail"] = self._redactor.redact(kw["detail"])
        return int(self._session.error(name, self._redactor.redact(message), **kw))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._session, attr)

    def __enter__(self) -> RedactingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> RedactingSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def sdk_redactor(redact: bool | None, directory: Path | None = None) -> Redactor | None:
    """The SDK's redactor: ``redact`` when given, else ``sdk = true`` under ``[tool.sdbctl.redact]``."""
    if redact is None:
        table, _ = read_table("redact", directory)
        redact = table.get("sdk") is True
    return load_redactor(directory) if redact else None


def url_without_secrets(url: str | None) -> str | None:
    """``url`` with the password (and any query parameter named like a key, a token or an OAuth
    ``auth``/``code``) replaced by ``[REDACTED]`` and no ``#fragment`` (where implicit OAuth puts its
    tokens): the form of a base URL or upstream that a manifest or an error message may hold."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":[REDACTED]@", 1)
    elif parts.username is not None and "@" in netloc:
        netloc = "[REDACTED]@" + netloc.rsplit("@", 1)[1]
    query = urllib.parse.urlencode(
        [
            (k, "[REDACTED]" if re.search(r"key|token|secret|password|sig|auth|code|credential", k, re.I) else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="[]",
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
