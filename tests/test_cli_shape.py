"""The shape of what the command line prints: typos and bad arguments are one line like every other
error, an unknown run names the newest runs first, and every listing fits an 80-column terminal
without breaking an id, a path, a status or a word."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

import sdbctl.fixtures.workloads
from tests.conftest import CLI, Outcome, Ran, assert_one_line_error, run_cli
from tests.helpers import record_run

sdbctl.fixtures.workloads.register_all()

# -- an unknown run -------------------------------------------------------------------------------


def test_an_unknown_run_names_the_five_newest_runs_newest_first(sdbctl: CLI, store: Path) -> None:
    created = ["zulu", "alpha", "mike", "bravo", "yankee", "charlie", "delta"]  # not in alphabetical order
    for run_id in created:
        record_run(store, "contract-renewal", run_id, sessions=1)
    newest_first = ", ".join(created[::-1][:5])
    assert newest_first == "delta, charlie, yankee, bravo, mike"
    assert_one_line_error(sdbctl("show", "nope"), f"known runs: {newest_first} and 2 more")
    assert_one_line_error(sdbctl("diff", "zulu", "nope"), f"known runs: {newest_first} and 2 more")


# -- typos and bad arguments: one line, exit 2 ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("shw", "base"), "sdbctl: error: no such command 'shw'; did you mean 'show'?"),
        (("patterns", "shw", "P4"), "sdbctl: error: no such command 'shw'; did you mean 'show'?"),
        (("runs", "--jsn"), "sdbctl: error: no such option '--jsn'; did you mean '--json'?"),
        (("diff", "--limt", "3", "a", "b"), "sdbctl: error: no such option '--limt'; did you mean '--limit'?"),
        (("--verison",), "sdbctl: error: no such option '--verison'; did you mean '--version'?"),
    ],
)
def test_a_typo_is_one_line_with_the_nearest_name(sdbctl: CLI, args: tuple[str, ...], line: str) -> None:
    out = sdbctl(*args)
    assert_one_line_error(out)
    assert out.stderr.strip() == line and out.stdout == ""


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("frobnicate",), ("no such command 'frobnicate'", "sdbctl -h")),
        (("runs", "--frobnicate"), ("no such option '--frobnicate'", "sdbctl runs -h")),
        (("show", "base", "--limit", "abc"), ("--limit", "'abc'")),
        (("demo", "--sessions", "many"), ("--sessions", "'many'")),
        (("diff", "a"), ("missing argument", "CANDIDATE", "sdbctl diff")),
        (("show",), ("missing argument", "RUN", "sdbctl show")),
        (("replay",), ("RUN",)),
        (("gate", "--base"), ("--base", "requires an argument")),
        (("show", "a", "b"), ("unexpected extra argument", "b")),
    ],
)
def test_a_bad_argument_is_one_line(sdbctl: CLI, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    out = sdbctl(*args)
    assert_one_line_error(out, *needles)
    assert out.stderr.startswith("sdbctl: error: ") and "Usage:" not in out.stderr


def test_help_is_still_the_help(sdbctl: CLI) -> None:
    for args in (("--help",), ("runs", "-h"), ("patterns", "--help")):
        out = sdbctl(*args)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert out.stdout.startswith(f"Usage: sdbctl {' '.join(args[:-1])}".rstrip() + " "), out.stdout
    bare = sdbctl()  # no command: the help, as before
    assert bare.returncode == 2 and "Usage: sdbctl [OPTIONS] COMMAND" in bare.stdout + bare.stderr


# -- 80 columns -----------------------------------------------------------------------------------

NARROW = {"COLUMNS": "80"}


def _fits(out: Outcome, *, soft: bool = False) -> None:
    """Every line of the output within 80 columns, but for a line holding a word longer than that (a
    path, which rich must not break: the terminal wraps it); with ``soft``, lines the command leaves
    for the terminal to wrap (advice holding a command to paste) may be longer."""
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr, out.stderr
    for line in [] if soft else out.stdout.splitlines():
        assert cell_len(line) <= 80 or max(map(cell_len, line.split())) > 80, (
            f"{line!r} is wider than 80:\n{out.stdout}"
        )


def _whole(out: Outcome, words: Iterable[Any]) -> None:
    """Each of ``words`` (ids, paths, statuses, the words of a cell) on one line of the output: never split
    across lines, never cut."""
    lines = out.stdout.splitlines()
    for word in {str(w) for w in words if w is not None and str(w)}:
        assert any(word in line for line in lines), f"{word!r} is broken:\n{out.stdout}"


def _words(*texts: Any) -> list[str]:
    return [w for text in texts if text is not None for w in str(text).split()]


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ran, dict[str, str]]:
    """A store made by ``sdbctl demo`` at 80 columns: its directory, the demo's output, and its runs
    (``base``, ``noise``, ``candidate``: ids of 30-odd characters)."""
    cwd = tmp_path_factory.mktemp("narrow")
    demo = run_cli(cwd, "demo", "--sessions", "8", env=NARROW)
    assert demo.returncode == 0, demo.stderr
    ids = [r["run_id"] for r in json.loads(run_cli(cwd, "runs", "--json").stdout)]
    runs = {role: next(i for i in ids if i.endswith(f"-{role}")) for role in ("base", "noise", "candidate")}
    return cwd, demo, runs


def test_demo_prints_the_report_path_whole_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, demo, runs = narrow
    _fits(demo)
    (report,) = (cwd / ".sdb" / "diffs").glob("*/report.html")
    printed = [p for p in re.findall(r"\S*report\.html", demo.stdout)]
    assert printed and all((cwd / p).resolve() == report.resolve() for p in printed), demo.stdout
    _whole(demo, runs.values())


def test_demo_prints_a_path_as_it_is_never_as_markup(sdbctl: CLI, tmp_path: Path) -> None:
    out = sdbctl("demo", "--sessions", "3", "--store", "b[old]", env=NARROW)
    assert out.returncode == 0, out.stderr
    (report,) = (tmp_path / "b[old]" / "diffs").glob("*/report.html")
    _whole(out, [str(report)])


def test_runs_at_80_columns_keeps_ids_and_status_whole_and_says_what_it_left_out(
    narrow: tuple[Path, Ran, dict[str, str]],
) -> None:
    cwd, _, runs = narrow
    out = run_cli(cwd, "runs", env=NARROW)
    _fits(out)
    _whole(out, [*runs.values(), "complete"])
    assert "compl" not in out.stdout.replace("complete", "")
    assert "left out" in out.stderr and "prompts" in out.stderr, out.stderr
    wide = run_cli(cwd, "runs")  # 200 columns: every column, nothing said
    assert "prompts" in wide.stdout and "model" in wide.stdout and wide.stderr == ""
    rows = json.loads(run_cli(cwd, "runs", "--json").stdout)
    created = [w for r in rows for w in (r["created"][:10], r["created"][11:19])]  # the table's date and time
    _whole(wide, [*created, *(w for r in rows for w in (r["run_id"], r["source_run"], r["model"], r["status"]))])


def test_show_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, runs = narrow
    out = run_cli(cwd, "show", runs["base"], "--limit", "30", env=NARROW)
    _fits(out)
    events = json.loads(run_cli(cwd, "show", runs["base"], "--json").stdout)[:30]
    _whole(out, [runs["base"], *(w for e in events for w in (e["session_id"], e["kind"], e["name"]))])


def test_diff_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, runs = narrow
    out = run_cli(cwd, "diff", runs["base"], runs["candidate"], env=NARROW)
    _fits(out)
    found = json.loads(run_cli(cwd, "diff", runs["base"], runs["candidate"], "--json").stdout)
    assert found["divergences"]
    cells = [w for d in found["divergences"] for w in (d["session_id"], d["reason"], *d["action"].values())]
    _whole(out, [runs["base"], runs["candidate"], *cells])


def test_query_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, _ = narrow
    sql = "SELECT run_id, kind, payload FROM events ORDER BY ALL LIMIT 12"  # JSON text folds, ids do not
    out = run_cli(cwd, "query", sql, env=NARROW)
    _fits(out)
    rows = json.loads(run_cli(cwd, "query", sql, "--json").stdout)
    _whole(out, [w for r in rows for w in (r["run_id"], r["kind"])])
    counts = "SELECT run_id, kind, count(*) AS n, min(name) AS first_name FROM events GROUP BY ALL ORDER BY ALL"
    out = run_cli(cwd, "query", counts, env=NARROW)
    _fits(out)
    rows = json.loads(run_cli(cwd, "query", counts, "--json").stdout)
    _whole(out, [w for r in rows for w in (r["run_id"], r["kind"], r["first_name"])])


def test_gate_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, runs = narrow
    args = ("gate", runs["candidate"], "--base", runs["base"], "--noise", runs["noise"])
    out = run_cli(cwd, *args, env=NARROW)
    _fits(out)
    verdict = json.loads(run_cli(cwd, *args, "--json").stdout)["verdict"]
    _whole(out, [runs["base"], runs["candidate"], *(w for c in verdict["checks"] for w in _words(c["name"]))])


def test_patterns_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, _ = narrow
    out = run_cli(cwd, "patterns", "list", env=NARROW)
    _fits(out)
    catalog = json.loads(run_cli(cwd, "patterns", "list", "--json").stdout)
    _whole(out, [w for p in catalog for w in _words(p["tag"], p["name"], p["concern"], p["summary"])])
    shown = run_cli(cwd, "patterns", "show", "P4", env=NARROW)
    _fits(shown)


def test_rm_dry_run_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, runs = narrow
    out = run_cli(cwd, "rm", *runs.values(), "--dry-run", env=NARROW)
    _fits(out)
    _whole(out, runs.values())
    assert len(json.loads(run_cli(cwd, "runs", "--json").stdout)) == 3  # a dry run


def test_diagnose_at_80_columns(narrow: tuple[Path, Ran, dict[str, str]]) -> None:
    cwd, _, runs = narrow
    run_cli(cwd, "diff", runs["base"], runs["candidate"])
    out = run_cli(cwd, "diagnose", runs["candidate"], env=NARROW)
    _fits(out, soft=True)
    report = json.loads(run_cli(cwd, "diagnose", runs["candidate"], "--json").stdout)
    assert report["findings"]
    _whole(out, [runs["candidate"], *(w for f in report["findings"] for w in _words(f["evidence"]))])
