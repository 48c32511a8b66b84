"""Recorded text shown to people: every control character visible as an escape.

A model's answer or a tool's result may hold terminal escape sequences (``\\x1b[31m``, ``\\x1b]0;title``),
NULs or line breaks. Printed raw they recolour or retitle the terminal, make an XML report
unparseable, or break a Markdown table row; shown as ``\\x1b``, ``\\n``, ``\\x00`` they are what they are:
data. Used by the terminal output, the JUnit file and the Markdown summary alike.
"""

from __future__ import annotations

# C0 and C1 control characters and DEL, each as a visible escape
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL.update({0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"})


def visible(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\n``)."""
    return text.translate(_CONTROL)


def markdown_cell(text: str) -> str:
    """``text`` for one cell of a Markdown table: control characters visible, ``|`` escaped, HTML
    (``<!--`` would hide the rest of the page) escaped."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
