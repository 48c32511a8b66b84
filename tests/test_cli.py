"""End to end through the installed ``sdbctl`` script: output shapes, exit codes, one-line errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdbctl.sdb.events import read_events
from tests.conftest import CLI, assert_one_line_error

RUN_KEYS = {"run_id", "created", "source_run", "model", "prompts", "sessions", "events", "status"}


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_runs_json_shape(sdbctl: CLI, sample_run: str, store: Path) -> None:
    out = sdbctl("runs", "--json")
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert isinstance(runs, list) and len(runs) == 1
    assert set(runs[0]) == RUN_KEYS
    run = runs[0]
    assert run["run_id"] == "sample" and run["status"] == "complete" and run["sessions"] == 10
    assert run["prompts"] == ["offer@v1"] and run["model"] == "sim:offer-v1" and run["source_run"] is None
    assert run["events"] == read_events(sorted((store / "runs" / "sample").glob("*.parquet"))).num_rows


def test_runs_table_lists_the_run(sdbctl: CLI, sample_run: str) -> None:
    out = sdbctl("runs")
    assert out.returncode == 0 and "sample" in out.stdout and "complete" in out.stdout and "offer@v1" in out.stdout


def test_show_timeline_and_json(sdbctl: CLI, sample_run: str) -> None:
    table = sdbctl("show", "sample", "--session", "7590-VHVEG")
    assert table.returncode == 0, table.stderr
    for word in ("input", "llm", "action", "propose_offer", "day-030/offer", "contract"):
        assert word in table.stdout
    events = json.loads(sdbctl("show", "@latest", "--session", "7590-VHVEG", "--json").stdout)
    assert [e["seq"] for e in events] == list(range(len(events)))
    action = next(e for e in events if e["kind"] == "action")
    assert action["payload"]["args"]["customer_id"] == "7590-VHVEG"
    assert action["parent"] == next(e["seq"] for e in events if e["kind"] == "llm")
    only_actions = json.loads(sdbctl("show", "sample", "--kind", "action", "--json").stdout)
    assert len(only_actions) == 10 and {e["kind"] for e in only_actions} == {"action"}


def test_query_table_json_and_csv(sdbctl: CLI, sample_run: str) -> None:
    sql = "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind"
    rows = json.loads(sdbctl("query", sql, "--json").stdout)
    assert {r["kind"]: r["n"] for r in rows}["action"] == 10 and set(rows[0]) == {"kind", "n"}
    parsed = list(csv.DictReader(io.StringIO(sdbctl("query", sql, "--csv").stdout)))
    assert parsed == [{"kind": r["kind"], "n": str(r["n"])} for r in rows]
    table = sdbctl("query", sql)
    assert table.returncode == 0 and "action" in table.stdout
    joined = json.loads(
        sdbctl(
            "query", "SELECT r.status, count(*) AS n FROM events e JOIN runs r USING (run_id) GROUP BY 1", "--json"
        ).stdout
    )
    assert joined == [{"status": "complete", "n": sum(r["n"] for r in rows)}]


# one listing per command, its values holding commas, quotes and newlines (the payloads are JSON text)
LISTINGS = {
    "runs": ("runs",),
    "show": ("show", "sample", "--session", "7590-VHVEG"),
    "query": (
        "query",
        "SELECT kind, count(*) AS n, 'a,b' AS comma, 'say \"hi\"' AS quote, 'two' || chr(10) || 'lines' AS nl, "
        "kind = 'llm' AS is_llm, [1, 2] AS list, NULL AS nothing FROM events GROUP BY kind ORDER BY kind",
    ),
}


def _csv_text(value: Any) -> str:
    """A JSON value as the listings' CSV writes it (control characters shown as the table shows them)."""
    from sdbctl.sdb.text import visible

    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return visible(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return visible(str(value))


@pytest.mark.parametrize("listing", sorted(LISTINGS))
def test_listing_csv_and_jsonl_carry_the_json_rows(sdbctl: CLI, sample_run: str, listing: str) -> None:
    args = LISTINGS[listing]
    out = sdbctl(*args, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and isinstance(rows, list)
    as_csv = sdbctl(*args, "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout, newline="")))
    assert parsed == [{k: _csv_text(v) for k, v in r.items()} for r in rows]
    assert as_csv.stdout.split("\n", 1)[0].split(",") == list(rows[0])  # the columns, in order
    lines = sdbctl(*args, "--jsonl").stdout.splitlines()
    assert len(lines) == len(rows) and [json.loads(line) for line in lines] == rows
    if listing == "query":
        assert parsed[0]["comma"] == "a,b" and parsed[0]["quote"] == 'say "hi"' and parsed[0]["nl"] == "two\\nlines"
    for pair in (("--json", "--csv"), ("--csv", "--jsonl"), ("--jsonl", "--json")):
        assert_one_line_error(sdbctl(*args, *pair), "give one output format", *pair)


def test_diff_csv_and_jsonl_carry_one_row_per_divergence_of_the_json(sdbctl: CLI) -> None:
    for args in (
        ("record", "contract-renewal", "--sessions", "6", "--run-id", "base"),
        ("replay", "base", "--model", "sim:renewal@v2", "--run-id", "cand"),
    ):
        assert sdbctl(*args).returncode == 0
    out = sdbctl("diff", "base", "cand", "--json")
    assert out.returncode == 0, out.stderr
    divergences = json.loads(out.stdout)["divergences"]
    assert divergences
    # the JSON document nests the action names; the rows have them flat, as the divergences view does
    flat = [
        {**{k: v for k, v in d.items() if k != "action"}, "base_action": d["action"]["base"],
         "candidate_action": d["action"]["candidate"]}
        for d in divergences
    ]  # fmt: skip
    lines = sdbctl("diff", "base", "cand", "--jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(rows, key=json.dumps) == sorted(flat, key=json.dumps)
    as_csv = sdbctl("diff", "base", "cand", "--csv").stdout
    parsed = list(csv.DictReader(io.StringIO(as_csv, newline="")))
    assert parsed == [{k: _csv_text(v) for k, v in r.items()} for r in rows]
    assert_one_line_error(sdbctl("diff", "base", "cand", "--csv", "--jsonl"), "give one output format")


def test_show_writes_every_payload_as_its_json_text_in_csv_and_the_table(sdbctl: CLI, store: Path) -> None:
    """A payload is any JSON value: the text "1", the number 1, null and a list of objects stay apart."""
    from sdbctl.recorders.sdk import Recorder

    payloads: list[Any] = ["1", 1, None, [{"sku": "A", "n": 2}, "x"]]
    with Recorder(store=store, run_id="p", handle_signals=False) as rec:
        s = rec.session("s")
        for payload in payloads:
            s.state("st", payload)
    parsed = list(csv.DictReader(io.StringIO(sdbctl("show", "p", "--csv").stdout, newline="")))
    assert [r["payload"] for r in parsed] == ['"1"', "1", "null", '[{"n":2,"sku":"A"},"x"]']
    table = sdbctl("show", "p", "--width", "40").stdout
    assert '[{"n":2,"sku":"A"},"x"]' in table and '"1"' in table


def test_listing_help_teaches_the_formats(sdbctl: CLI) -> None:
    for command in LISTINGS:
        out = sdbctl(command, "--help")
        assert out.returncode == 0, out.stderr
        for flag in ("--json", "--csv", "--jsonl", "Output: a table", "Example"):
            assert flag in out.stdout, (command, flag)


def test_show_table_cuts_at_limit_and_says_how_many_more(sdbctl: CLI, sample_run: str) -> None:
    out = sdbctl("show", "sample", "--limit", "3")
    assert out.returncode == 0, out.stderr
    total = len(json.loads(sdbctl("show", "sample", "--json").stdout))
    assert f"{total - 3} more events; use --limit 0" in out.stderr and "--jsonl" in out.stderr
    assert "session" in out.stdout and "10 sessions" in out.stdout


def test_export_jsonl_and_parquet(sdbctl: CLI, sample_run: str, tmp_path: Path) -> None:
    assert sdbctl("export", "sample", "--format", "jsonl", "--out", "run.jsonl").returncode == 0
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["kind"] == "input" and isinstance(first["payload"], dict)
    assert sdbctl("export", "sample", "--format", "parquet", "--out", "run.parquet").returncode == 0
    table = read_events([tmp_path / "run.parquet"])
    assert table.num_rows == len(lines)
    stdout = sdbctl("export", "sample")
    assert stdout.stdout.splitlines() == lines


def test_version_and_help_with_examples(sdbctl: CLI) -> None:
    version = sdbctl("--version")
    assert version.returncode == 0 and version.stdout.startswith("sdbctl ")
    commands = [
        ("runs",),
        ("show",),
        ("query",),
        ("export",),
        ("record",),
        ("replay",),
        ("diff",),
        ("gate",),
        ("patterns",),
        ("patterns", "list"),
        ("patterns", "show"),
        ("patterns", "recommend"),
    ]
    for command in commands:
        out = sdbctl(*command, "--help")
        assert out.returncode == 0 and "Example" in out.stdout, command


def test_cli_import_does_not_load_heavy_libraries() -> None:
    heavy = "('duckdb', 'pyarrow', 'deepdiff')"
    code = f"import sdbctl.cli.main, sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_store_is_exit_2(sdbctl: CLI) -> None:
    assert_one_line_error(sdbctl("runs", "--store", "nowhere"), "store nowhere", "no such directory")
    assert_one_line_error(sdbctl("runs", env={"SDB_STORE": "elsewhere"}), "store elsewhere")


def test_unknown_run_is_exit_2(sdbctl: CLI, sample_run: str) -> None:
    assert_one_line_error(sdbctl("show", "nope"), "run 'nope' not found", "sample")
    assert_one_line_error(sdbctl("show", "sample", "--session", "nobody"), "no session 'nobody'")
    assert_one_line_error(sdbctl("export", "../etc"), "run id '../etc' is not valid")


def test_sql_error_is_exit_2(sdbctl: CLI, sample_run: str) -> None:
    assert_one_line_error(sdbctl("query", "SELEC 1"), "query failed", "syntax error")
    assert_one_line_error(sdbctl("query", "SELECT nope FROM events"), "query failed", "nope")


@pytest.mark.parametrize("damage", ["corrupt", "foreign", "future"])
def test_bad_parquet_is_exit_2_and_nothing_is_touched(sdbctl: CLI, sample_run: str, store: Path, damage: str) -> None:
    bad = store / "runs" / "sample" / "events-00099.parquet"
    if damage == "corrupt":
        bad.write_bytes(b"PAR1 this is not parquet")
    elif damage == "foreign":
        pq.write_table(pa.table({"x": [1, 2]}), bad)
    else:
        first = store / "runs" / "sample" / "events-00000.parquet"
        table = pq.read_table(first)
        pq.write_table(table.replace_schema_metadata({b"sdb.schema_version": b"3"}), bad)
    before = _tree_digest(store)
    # a query naming the run (store-wide, a damaged run is skipped with a warning: test_damaged_store.py)
    query = ("query", "SELECT count(*) FROM events", "--run", "sample")
    for args in (query, ("show", "sample"), ("export", "sample", "-o", "x.jsonl")):
        assert_one_line_error(sdbctl(*args), "events-00099.parquet")
    assert _tree_digest(store) == before
    assert not (store.parent / "x.jsonl").exists()


def test_debug_shows_the_traceback(sdbctl: CLI) -> None:
    out = sdbctl("runs", "--store", "nowhere", env={"SDB_DEBUG": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "StoreNotFound" in out.stderr


def test_the_installed_script_prints_and_exits_as_the_in_process_runs(
    sdbctl: CLI, sdbctl_process: CLI, sample_run: str
) -> None:
    """The tests run the command line in their own process (tests/conftest.py); the script a user runs
    gives the same output and exit status: a listing (0), a one-line error (2), a usage error (2)."""
    statuses = []
    for args in (("runs",), ("show", "sample", "--limit", "2"), ("show", "nope"), ("shwo", "sample")):
        script, here = sdbctl_process(*args), sdbctl(*args)
        assert (script.returncode, script.stdout, script.stderr) == (here.returncode, here.stdout, here.stderr), args
        statuses.append(script.returncode)
    assert statuses == [0, 0, 2, 2]
    debug = sdbctl_process("runs", "--store", "nowhere", env={"SDB_DEBUG": "1"})  # an uncaught exception: 1
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "StoreNotFound" in debug.stderr


def test_unwritable_export_path_and_damaged_manifest_are_exit_2(sdbctl: CLI, sample_run: str, store: Path) -> None:
    assert_one_line_error(sdbctl("export", "sample", "--out", "/nonexistent/dir/x.jsonl"), "no such directory")
    (store / "runs" / "broken").mkdir()
    (store / "runs" / "broken" / "run.json").write_text("{")
    # asked for by id, a damaged run is its error; the listing leaves it out with a warning
    # (tests/test_hostile_inputs.py)
    assert_one_line_error(sdbctl("show", "broken"), "broken/run.json: not a valid run manifest")
