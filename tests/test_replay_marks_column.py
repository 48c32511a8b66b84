"""The replay marks in a column of their own (issue 22, item 6): a replay's llm, action and error
events carry the canonical JSON of their mark in ``replay`` (besides the payload's ``"replay"``), and
the diff reads the marks there, never decompressing the llm payloads. Parts written before the column
(schema versions 1 and 2) read as before: the ``events`` view derives the column from the payload."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.diff import diff_runs
from sdbctl.sdb.diff._staging import mark, shape
from sdbctl.sdb.errors import SchemaError
from sdbctl.sdb.events import VERSION_KEY, read_events
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store, connect
from tests.conftest import CLI, assert_one_line_error

sdbctl.fixtures.workloads.register_all()

pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's cache: the test's own

Rows = list[dict[str, Any]]


def _step_replay(store: Path, *, repeat: int = 1) -> None:
    """``base`` (8 sessions of the renewal workload) and its step-mode replay ``cand``."""
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=8, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="cand", repeat=repeat))


def _marked(store: Path, run: str = "marked") -> None:
    """A run of 3 parts whose llm and error events carry marks of every kind: a session-mode replay's
    (``cached``) and its plain events, written by the recorder's own methods."""
    with Recorder(store=store, run_id=run) as rec:
        for k in range(6):
            s = rec.session(f"s{k}")
            s.input("task", {"k": k})
            cached = {"cached": True} if k % 2 else None
            llm = s.llm({"messages": [{"role": "user", "content": f"{k}"}]}, {"choices": []}, model="m", replay=cached)
            s.action("act", {"k": k}, parent=llm)
            if k == 3:
                s.error("provider", "boom", detail={"status": 500}, replay={"cached": False})
            s.state("done", {"replay": {"cached": True}})  # a state's data: no mark
            rec.flush()  # a part per two sessions or so


def _parts(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events-*.parquet"))


def _write_part(run_dir: Path, part: Path, table: pa.Table) -> None:
    """``table`` written over ``part``, its manifest entry made to match (as a writer computes it)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = bytes(sink.getvalue())
    part.write_bytes(data)
    manifest = json.loads((run_dir / "run.json").read_text())
    for entry in manifest["part_files"]:
        if entry["name"] == part.name:
            entry.update(xxh3=xxhash.xxh3_64_hexdigest(data), size=len(data), rows=table.num_rows)
    (run_dir / "run.json").write_text(json.dumps(manifest))


def _as_v2(run_dir: Path, parts: list[Path] | None = None) -> None:
    """The parts of ``run_dir`` (or ``parts``) rewritten as schema version 2 wrote them: no ``replay``."""
    for part in _parts(run_dir) if parts is None else parts:
        table = pq.read_table(part)
        old = table.drop_columns(["replay"])
        meta = {**(table.schema.metadata or {}), VERSION_KEY: b"2"}
        _write_part(run_dir, part, old.replace_schema_metadata(meta))


def _rewrite(run_dir: Path, change: Any) -> None:
    """Part 0 of ``run_dir`` rewritten to ``change(rows)``, keeping its schema."""
    part = _parts(run_dir)[0]
    table = pq.read_table(part)
    rows = change(table.to_pylist())
    _write_part(run_dir, part, pa.Table.from_pylist(rows, schema=table.schema))


def _marks(store: Path, run: str) -> list[tuple[Any, ...]]:
    con = connect(Store.open(store), run)
    mark(con, run)
    return con.execute("SELECT * FROM marks ORDER BY session_id, seq").fetchall()


def _view_marks(store: Path, run: str) -> list[tuple[Any, ...]]:
    con = connect(Store.open(store), run)
    return con.execute("SELECT session_id, seq, kind, replay FROM events ORDER BY session_id, seq").fetchall()


def test_a_step_mode_replay_writes_its_marks_in_the_replay_column(store: Path) -> None:
    _step_replay(store, repeat=2)
    rows = read_events(Store.open(store).part_paths("cand")).to_pylist()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    assert by_kind["llm"] and by_kind["action"]
    for row in by_kind["llm"]:
        mark_text = row["replay"]
        assert mark_text is not None and json.loads(mark_text) == json.loads(row["payload"])["replay"]
        assert f'"replay":{mark_text}' in row["payload"]  # the payload's own text, byte for byte
    assert all(r["replay"] is None and "replay" not in json.loads(r["payload"]) for r in by_kind["action"])
    assert {json.loads(r["replay"])["repeat"] for r in by_kind["llm"]} == {0, 1}
    others = [r for r in rows if r["kind"] not in ("llm", "action", "error")]
    assert all(r["replay"] is None for r in others)
    assert all(r["replay"] is None for r in read_events(Store.open(store).part_paths("base")).to_pylist())
    con = connect(Store.open(store), runs=["base", "cand"])
    assert shape(con, "cand").forced and not shape(con, "base").forced


def test_only_the_methods_given_a_mark_fill_the_column(store: Path) -> None:
    _marked(store)
    rows = read_events(Store.open(store).part_paths("marked")).to_pylist()
    filled = {(r["session_id"], r["seq"]): json.loads(r["replay"]) for r in rows if r["replay"] is not None}
    llm = {(r["session_id"], r["seq"]) for r in rows if r["kind"] == "llm"}
    assert filled == {
        **{k: {"cached": True} for k in llm if int(k[0][1:]) % 2},
        **{(r["session_id"], r["seq"]): {"cached": False} for r in rows if r["kind"] == "error"},
    }


def test_a_run_written_with_schema_v2_reads_and_diffs_as_before(store: Path) -> None:
    _step_replay(store, repeat=2)
    _marked(store)
    expected = {run: (_marks(store, run), _view_marks(store, run)) for run in ("base", "cand", "marked")}
    diff = diff_runs(Store.open(store), "base", "cand", save=False).as_dict()
    for run in ("base", "cand", "marked"):
        _as_v2(store / "runs" / run)
        assert all(pq.read_schema(p).metadata[VERSION_KEY] == b"2" for p in _parts(store / "runs" / run))
        assert (_marks(store, run), _view_marks(store, run)) == expected[run]
    assert diff_runs(Store.open(store), "base", "cand", save=False).as_dict() == diff
    con = connect(Store.open(store), runs=["cand", "marked"])
    assert shape(con, "cand").forced and not shape(con, "marked").forced
    cached = con.execute("SELECT count(*) FROM marks WHERE run_id = 'marked' AND cached::BOOLEAN").fetchone()
    assert cached == (3,)


def test_a_run_of_parts_of_both_versions_reads(store: Path, sdbctl: CLI) -> None:
    """A resume after an upgrade: the run's first parts are version 2, its later ones version 3."""
    _marked(store)
    parts = _parts(store / "runs" / "marked")
    assert len(parts) >= 3
    expected = (_marks(store, "marked"), _view_marks(store, "marked"))
    _as_v2(store / "runs" / "marked", parts[:2])
    versions = [pq.read_schema(p).metadata[VERSION_KEY] for p in parts]
    assert versions[:2] == [b"2", b"2"] and set(versions[2:]) == {b"3"}
    assert (_marks(store, "marked"), _view_marks(store, "marked")) == expected
    out = sdbctl("query", "SELECT count(replay) AS n FROM events", "--run", "marked", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": 4}]  # 3 cached answers, 1 provider error


def test_the_schema_check_wants_replay_from_version_3_only(tmp_path: Path) -> None:
    from sdbctl.sdb.events import EVENT_SCHEMA, check_schema

    without = pa.schema([f for f in EVENT_SCHEMA if f.name != "replay"])
    for version in (b"1", b"2"):
        assert check_schema(without.with_metadata({VERSION_KEY: version}), "old.parquet") == version.decode()
    with pytest.raises(SchemaError, match=r"^new\.parquet: missing event column\(s\) replay$"):
        check_schema(without.with_metadata({VERSION_KEY: b"3"}), "new.parquet")


def test_a_version_3_part_without_the_column_is_refused(store: Path, sdbctl: CLI) -> None:
    _marked(store)
    run_dir = store / "runs" / "marked"
    part = _parts(run_dir)[1]
    table = pq.read_table(part)
    _write_part(run_dir, part, table.drop_columns(["replay"]).replace_schema_metadata(table.schema.metadata))
    out = sdbctl("query", "SELECT count(*) FROM events", "--run", "marked")
    assert_one_line_error(out, part.name, "missing event column(s) replay")


@pytest.mark.parametrize(
    "bogus",
    ['{"repeat":"x","source_seq":1}', "not json at all", '{"repeat":-1,"source_seq":1}'],
    ids=["repeat not a number", "not JSON", "repeat out of range"],
)
def test_a_bogus_replay_column_is_a_damaged_run(store: Path, sdbctl: CLI, bogus: str) -> None:
    _step_replay(store)

    def plant(rows: Rows) -> Rows:
        first = next(i for i, r in enumerate(rows) if r["kind"] == "llm")
        rows[first] = {**rows[first], "replay": bogus}  # its payload's mark is left as it was
        return rows

    _rewrite(store / "runs" / "cand", plant)
    for args in (("diff", "base", "cand"), ("gate", "cand", "--base", "base")):
        assert_one_line_error(sdbctl(*args), "run 'cand'", "damaged")


def test_the_column_decides_when_it_disagrees_with_the_payload(store: Path) -> None:
    """One llm event of a session-mode run marked as a step's answer in its column only: the run
    contradicts itself (damaged), though every payload says it is a session-mode run."""
    _marked(store)

    def plant(rows: Rows) -> Rows:
        first = next(i for i, r in enumerate(rows) if r["kind"] == "llm")
        rows[first] = {**rows[first], "replay": '{"repeat":0,"source_seq":1}'}
        return rows

    _rewrite(store / "runs" / "marked", plant)
    assert all('"source_seq"' not in r["payload"] for r in read_events(_parts(store / "runs" / "marked")).to_pylist())
    with pytest.raises(SchemaError, match=r"^run 'marked' is damaged: .* carry \$\.replay\.source_seq"):
        shape(connect(Store.open(store), "marked"), "marked")


class _Statements:
    """A DuckDB connection that keeps each statement it runs, with its parameters."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.seen: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> Any:
        self.seen.append((sql, params))
        return self._con.execute(sql, params) if params is not None else self._con.execute(sql)

    def executemany(self, sql: str, params: Any) -> Any:
        return self._con.executemany(sql, params)


def _scanned_columns(store: Path, run: str) -> list[str]:
    """What DuckDB reads from the Parquet parts for each statement of :func:`mark` that reads the store."""
    con = connect(Store.open(store), run)
    spy = _Statements(con)
    mark(spy, run)
    reads = [(sql, params) for sql, params in spy.seen if re.search(r"\bevents\b", sql)]
    assert reads
    plans = []
    for sql, params in reads:
        plan = con.execute("EXPLAIN " + sql, params).fetchall()
        plans.append("\n".join(row[1] for row in plan))
    return plans


def test_the_marks_are_read_without_the_llm_payloads(store: Path) -> None:
    """The payloads are most of a run's bytes: reading the marks from them cost the load test's diff
    2.7 s. A run with no provider error: no statement of the marks step reads a payload."""
    _step_replay(store)
    for plan in _scanned_columns(store, "cand"):
        assert "READ_PARQUET" in plan and "payload" not in plan, plan
    _as_v2(store / "runs" / "cand")  # the derived column of old parts: the payload is read (the check can see it)
    assert any("payload" in plan for plan in _scanned_columns(store, "cand"))


def test_an_object_store_reads_the_parts_of_both_versions_alike(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote path (an Arrow dataset per version) derives the column of old parts as the local one."""
    from tests.s3_server import S3Server

    _marked(store)
    _as_v2(store / "runs" / "marked", _parts(store / "runs" / "marked")[:2])
    expected = (_marks(store, "marked"), _view_marks(store, "marked"))
    with S3Server() as s3:
        s3.empty_bucket("runs")
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        client = s3.client()
        for path in sorted((store / "runs" / "marked").iterdir()):
            if path.is_file():
                client.put_object(Bucket="runs", Key=f"team-m/runs/marked/{path.name}", Body=path.read_bytes())
        remote = Store.open("s3://runs/team-m")
        con = connect(remote, "marked")
        mark(con, "marked")
        got = con.execute("SELECT * FROM marks ORDER BY session_id, seq").fetchall()
        view = con.execute("SELECT session_id, seq, kind, replay FROM events ORDER BY session_id, seq").fetchall()
    assert (got, view) == expected


@pytest.mark.parametrize("kind", [pa.int64(), pa.list_(pa.string()), pa.binary()])
def test_a_replay_column_of_another_type_is_refused(kind: pa.DataType) -> None:
    """A mark of another type would be read as no mark (the run's marks silently lost): refused, one line."""
    from sdbctl.sdb.events._schema import EVENT_SCHEMA, check_schema

    schema = EVENT_SCHEMA.set(EVENT_SCHEMA.get_field_index("replay"), pa.field("replay", kind))
    with pytest.raises(SchemaError, match=r"part\.parquet: event column replay is .*, not a string"):
        check_schema(schema.with_metadata(EVENT_SCHEMA.metadata), "part.parquet")


@pytest.mark.parametrize(("run", "column"), [("base", "seq"), ("cand", "latency_ms"), ("cand", "ts")])
def test_a_part_with_a_column_of_another_type_is_one_line_never_a_traceback(
    store: Path, sdbctl: CLI, run: str, column: str
) -> None:
    """A well-formed part (its checksum matching) whose column holds text where a number or a time
    belongs: before, a traceback and exit 1, which CI reads as a FAIL."""
    _step_replay(store)
    run_dir = store / "runs" / run
    part = _parts(run_dir)[0]
    table = pq.read_table(part)
    as_text = pa.array([str(v) for v in table[column].to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index(column), column, as_text)
    _write_part(run_dir, part, table.replace_schema_metadata(pq.read_schema(part).metadata))
    for args in (("gate", "cand", "--base", "base"), ("diff", "base", "cand", "--html", "r.html"), ("show", run)):
        assert_one_line_error(sdbctl(*args), part.name, f"event column {column} is string, not")


def test_a_recorded_request_that_is_no_object_is_a_damaged_run_not_a_traceback(store: Path, sdbctl: CLI) -> None:
    """A tampered part whose first llm event holds a request that is text: the replay ended in a
    traceback (exit 1) where it read it; it is one line naming the run and the event."""
    _step_replay(store)

    def plant(rows: Rows) -> Rows:
        first = next(i for i, r in enumerate(rows) if r["kind"] == "llm")
        body = json.loads(rows[first]["payload"])
        rows[first] = {**rows[first], "payload": json.dumps({**body, "request": "hello"})}
        return rows

    _rewrite(store / "runs" / "base", plant)
    assert_one_line_error(sdbctl("replay", "base", "--model", "recorded"), "run 'base' is damaged", "not an object")
