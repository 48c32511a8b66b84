"""Recorded text shown to people: every control and format character visible as an escape.

A model's answer or a tool's result may hold terminal escape sequences (``\\x1b[31m``, ``\\x1b]0;title``),
NULs or line breaks; a name may hold a right-to-left override (U+202E, ``invoice\\u202egpj.exe`` shows
as ``invoiceexe.jpg``) or another invisible format character, or code points XML cannot carry (U+FFFE,
a lone surrogate). Printed raw they recolour or retitle the terminal, disguise a name, make an XML
report unparseable, or break a Markdown table row; shown as ``\\x1b``, ``\\n``, ``\\u202e`` they are
what they are: data. One rule (:func:`visible`), used by the tables, CSV, the JUnit file and the
Markdown summary alike (the page of ``sdbctl view`` shows them escaped by the same rule, in its script).
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 control characters and DEL, each as a visible escape
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"})
# format characters (bidi overrides and isolates, zero-width ones, soft hyphen, BOM, tags), surrogates,
# and line and paragraph separators: shown as \uXXXX, as are the noncharacters (U+FFFE, U+FDD0, ...)
_SHOWN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Markdown: backslash escapes of what opens a link, an image, emphasis, a code span or a strike-through,
# and of the colon of "://" and the dot of "www.", which GFM's autolink extension would make a link of
_MARKDOWN = re.compile(r"\\(?=[!-/:-@\[-`{-~])|[\[\]*`~]|(?<![^\W_])_|_(?![^\W_])|:(?=//)|(?<=[Ww]{3})\.")
# a CSV cell a spreadsheet would read as a formula (or as one after a tab or a carriage return)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if unicodedata.category(char) in _SHOWN or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def _unicode_visible(text: str) -> str:
    # str.isprintable() is False for every category above (and for spaces other than " "): the
    # common case, plain text, is one C-level pass
    return text if text.isprintable() else _NON_ASCII.sub(_shown, text)


def visible(text: str) -> str:
    """``text`` with every control and format character shown as an escape (``\\x1b``, ``\\n``,
    ``\\u202e``): nothing left that a terminal acts on, that hides or reorders text, or that XML cannot hold."""
    return _unicode_visible(text.translate(_CONTROL))


def csv_text(text: str) -> str:
    """A text cell of CSV: :func:`visible`, and a leading ``'`` when it starts as a formula would
    (``=``, ``+``, ``-``, ``@``, a tab, a carriage return), which a spreadsheet then shows as text
    instead of running (``=cmd|' /C calc'!A0``). Only text: a number is written as the number it is."""
    shown = visible(text)
    return "'" + shown if text.startswith(_FORMULA) else shown


def markdown_cell(text: str) -> str:
    """``text`` for one cell of a Markdown table, to render as the literal text it is: control and
    format characters visible, link, image, emphasis, code and strike-through syntax escaped, ``|``
    escaped, HTML (``<!--`` would hide the rest of the page) escaped."""
    shown = _MARKDOWN.sub(lambda m: "\\" + m.group(), visible(text))
    return shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
