"""Hostile text in every output (issue 20): terminal escapes, bidi overrides and other format
characters, XML-invalid characters and Markdown syntax in recorded names are shown as the literal
text they are, by one rule (:mod:`sdb.text`), in tables, CSV, JUnit, Markdown and HTML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from sdbctl.recorders.sdk import Recorder
from tests.conftest import CLI

# an OSC title, SGR colours, an OSC 8 hyperlink, a bell, and a right-to-left override hiding ".exe"
TERMINAL = "\x1b]0;owned\x07\x1b[31mred\x1b[0m \x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\"
BIDI = "invoice\u202egpj.exe"
FORMAT = "zero\u200bwidth\u2066iso\u2069 soft\u00adhyphen bom\ufeff tag\U000e0041"
XML_BAD = "non\ufffechar\uffff ctl\x01\x0b"
MARKDOWN = "[text](https://evil.example) ![img](https://evil.example/x.png) **PASS** _ok_ `code` ~~no~~"
RAW = ("\x1b", "\x07", "\u202e", "\u200b", "\u2066", "\u00ad", "\ufeff", "\U000e0041", "\ufffe", "\uffff", "\x01")


def _record(store: Path) -> None:
    """Two runs whose session id and action name carry every kind of hostile text, diverging."""
    for run, value in (("base", "plain"), ("cand", "changed")):
        with Recorder(store=store, run_id=run) as rec:
            s = rec.session(f"s-{BIDI}-{XML_BAD}")
            llm = s.llm({"messages": []}, {}, model="m", step="st")
            s.action(f"send-{TERMINAL}-{FORMAT}", {"text": value, "note": BIDI}, step="st", parent=llm)
            llm = s.llm({"messages": []}, {}, model="m", step="md")
            s.action(MARKDOWN, {"text": value}, step="md", parent=llm)


def _assert_shown_escaped(text: str, what: str) -> None:
    for raw in RAW:
        assert raw not in text, (what, repr(raw))
    assert "\\u202e" in text, what


@pytest.mark.parametrize(
    "args",
    [
        ("query", "SELECT session_id, name, payload FROM events WHERE kind = 'action'", "--csv"),
        ("show", "cand", "--csv"),
        ("query", "SELECT session_id, name, payload FROM events WHERE kind = 'action'"),
        ("show", "cand"),
        ("diff", "base", "cand"),
    ],
    ids=["query-csv", "show-csv", "query-table", "show-table", "diff-table"],
)
def test_csv_and_tables_show_control_and_format_characters_escaped(
    sdbctl: CLI, tmp_path: Path, args: tuple[str, ...]
) -> None:
    _record(tmp_path / ".sdb")
    out = sdbctl(*args)
    assert out.returncode == 0, out.stderr
    _assert_shown_escaped(out.stdout + out.stderr, " ".join(args))
    if "--csv" in args:
        assert "\\x1b]0;owned\\x07" in out.stdout  # the OSC title, as the table shows it


def test_csv_escapes_its_header_too(sdbctl: CLI, tmp_path: Path) -> None:
    _record(tmp_path / ".sdb")
    out = sdbctl("query", 'SELECT 1 AS "\x1b]0;t\x07\u202e"', "--csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "\\x1b]0;t\\x07\\u202e"


def test_junit_markdown_and_html_of_hostile_names(sdbctl: CLI, tmp_path: Path) -> None:
    _record(tmp_path / ".sdb")
    out = sdbctl("gate", "cand", "--base", "base", "--junit", "g.xml", "--markdown", "g.md", "--html", "g.html")
    assert out.returncode == 1, out.stderr
    xml = (tmp_path / "g.xml").read_text(encoding="utf-8")
    suite = ET.fromstring(xml.encode("utf-8"))  # valid XML: U+FFFE, U+FFFF, \x01, \x0b escaped
    names = [c.get("name") or "" for c in suite.findall("testcase[@classname='sessions']")]
    assert names == ["s-invoice\\u202egpj.exe-non\\ufffechar\\uffff ctl\\x01\\x0b"]
    _assert_shown_escaped(xml, "junit")
    md = (tmp_path / "g.md").read_text(encoding="utf-8")
    _assert_shown_escaped(md, "markdown")
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)
    cells = re.findall(r"<td>(.*?)</td>", rendered, re.S)
    assert cells and not [c for c in cells if "<" in c]  # no link, image, emphasis, code span or strike-through
    assert MARKDOWN.replace("&", "&amp;") in rendered  # the tool's name, literally
    page = (tmp_path / "g.html").read_text(encoding="utf-8")
    _assert_shown_escaped(page, "html")


def test_junit_stays_valid_xml_for_any_text(sdbctl: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text that no recorder writes (a lone surrogate) but a tool of the API may hand over."""
    from sdbctl.sdb.ci_summary import junit
    from sdbctl.sdb.gate import run_gate
    from sdbctl.sdb.store import Store

    _record(tmp_path / ".sdb")
    monkeypatch.chdir(tmp_path)
    result, verdict = run_gate(Store.open(tmp_path / ".sdb"), "cand", base="base")
    every = "".join(chr(c) for c in [*range(0x20), 0x7F, 0x85, 0xD800, 0xDFFF, 0xFFFE, 0xFFFF, 0x202E, 0x10FFFF])
    for d in result.divergences:
        d.base_action = every
        d.step = every
    session = result.divergences[0].session_id
    result.divergences[0].session_id = session + "\udc80"
    doc = junit(result, verdict).encode("utf-8")  # encodable (no lone surrogate) ...
    suite = ET.fromstring(doc)  # ... and parses
    assert any("\\ud800\\udfff\\ufffe\\uffff\\u202e" in (f.text or "") for f in suite.iter("system-out"))


def test_markdown_cell_renders_as_its_literal_text() -> None:
    from sdbctl.sdb.text import markdown_cell

    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for text in (MARKDOWN, "\\**PASS**", "a\\|b", "<b>x</b> &amp;", "__init__ args_changed", "x\\[y](z)"):
        table = f"| a |\n|---|\n| {markdown_cell(text)} |\n"
        cell = md.render(table).split("<td>", 1)[1].split("</td>", 1)[0]
        expected = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert cell == expected, (text, markdown_cell(text), cell)
    assert markdown_cell("args_changed propose_offer") == "args_changed propose_offer"  # plain names as they are


def test_ordinary_text_is_left_as_it_is() -> None:
    from sdbctl.sdb.text import visible

    text = "Café 東京 naïve — «quoted» ½ emoji 👍🏽 family 👨‍👩‍👧 Ελληνικά עברית"
    # ZWJ (U+200D) is a format character: shown, as every other one
    assert visible(text) == text.replace("\u200d", "\\u200d")
    assert visible("line\nnext\ttab") == "line\\nnext\\ttab"


def test_query_json_writes_nan_and_infinities_as_strings(sdbctl: CLI, tmp_path: Path) -> None:
    """null would read as a missing value: NaN and ±inf are written as the strings JSON parsers know."""
    import json

    _record(tmp_path / ".sdb")
    sql = (
        "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::DOUBLE AS c, NULL::DOUBLE AS d, 1.5 AS e, "
        "['nan'::DOUBLE, 2.0] AS l, {'x': '-inf'::FLOAT} AS s"
    )
    expected = {
        "a": "NaN",
        "b": "Infinity",
        "c": "-Infinity",
        "d": None,
        "e": 1.5,
        "l": ["NaN", 2.0],
        "s": {"x": "-Infinity"},
    }
    out = sdbctl("query", sql, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [expected]
    lines = sdbctl("query", sql, "--jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [expected]


# review item 12: a cell a spreadsheet would run as a formula, a URL a Markdown renderer would link
FORMULAS = ("=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\tx", "\r=1")


def test_csv_text_cells_never_start_a_formula_and_numbers_stay_numbers(sdbctl: CLI, tmp_path: Path) -> None:
    import csv
    import io

    _record(tmp_path / ".sdb")
    cells = ", ".join(f"'{f}' AS c{i}" for i, f in enumerate(f.replace("'", "''") for f in FORMULAS))
    out = sdbctl("query", f"SELECT {cells}, -5 AS n, -2.5 AS x, 'plain' AS p", "--csv")
    assert out.returncode == 0, out.stderr
    header, row = list(csv.reader(io.StringIO(out.stdout)))
    assert header[-3:] == ["n", "x", "p"]
    assert all(cell.startswith("'") for cell in row[: len(FORMULAS)]), row
    assert row[0] == "'=cmd|' /C calc'!A0" and row[2] == "'-2+3"  # the text itself follows, as it was
    assert row[-3:] == ["-5", "-2.5", "plain"]  # numbers are numbers; ordinary text as it is


def test_a_url_in_store_text_does_not_autolink_in_the_markdown_summary() -> None:
    """GitHub's renderer (cmark-gfm) links a bare ``http://``, ``https://``, ``ftp://`` or ``www.``: an
    escaped colon or dot stops it and renders as the same text (checked with cmarkgfm; see
    docs/diff-and-gate.md). Here: no bare scheme or ``www.`` is left, and CommonMark renders the text."""
    from sdbctl.sdb.text import markdown_cell

    md = MarkdownIt("commonmark").enable(["table"])
    for text in ("see https://evil.example/pay now", "HTTP://X.EXAMPLE", "ftp://f.example/x", "go www.evil.example"):
        cell = markdown_cell(text)
        assert not re.search(r"(?<!\\)://|(?i:www)\.", cell), cell  # escaped: "\\://", "www\\."
        rendered = md.render(f"| a |\n|---|\n| {cell} |\n").split("<td>", 1)[1].split("</td>", 1)[0]
        assert rendered == text and "<a" not in rendered
