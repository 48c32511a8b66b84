"""Event schema round-trip, the schema checks of the reader, and the store's manifests and views."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import RunNotFound, SchemaError, StoreNotFound, UsageError
from sdbctl.sdb.events import (
    EVENT_SCHEMA,
    SCHEMA_VERSION,
    VERSION_KEY,
    action_digest,
    canonical_json,
    read_events,
    read_file_schema,
)
from sdbctl.sdb.query import RUN_COLUMNS, TIMELINE, run_rows, timeline
from sdbctl.sdb.store import RunExists, Store, connect, run_query


def _full_run(store: Path) -> str:
    with Recorder(store=store, meta={"agent": "t", "team": "x"}, run_id="full", actor="bot", pattern="P5") as rec:
        s = rec.session("c-1")
        s.input("contract", {"id": 1})
        llm = s.llm(
            {"messages": [{"role": "user", "content": "hi"}]},
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
            model="m-1",
            prompt="offer@v2",
            step="day-030/offer",
            latency_ms=12.5,
        )
        act = s.action("send", {"b": 2.0, "a": "x"}, step="day-030/offer", parent=llm, actor="worker:legal")
        s.gate("policy", "deny", "over cap", parent=act)
        s.effect("send", {"ok": True}, parent=act)
        s.state("renewed", {"v": 1})
        s.error("provider", "timeout", detail={"after_s": 30})
    return "full"


def test_every_column_round_trips_with_its_type(store: Path) -> None:
    _full_run(store)
    parts = Store.open(store).part_paths("full")
    table = read_events(parts)
    for field in EVENT_SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    assert read_file_schema(parts[0]).metadata[VERSION_KEY] == SCHEMA_VERSION.encode() == b"3"
    rows = table.to_pylist()
    assert [r["seq"] for r in rows] == list(range(7))
    assert [r["kind"] for r in rows] == ["input", "llm", "action", "gate", "effect", "state", "error"]
    llm, act, gate = rows[1], rows[2], rows[3]
    assert (llm["model"], llm["prompt"], llm["step"], llm["latency_ms"]) == ("m-1", "offer@v2", "day-030/offer", 12.5)
    assert (llm["tokens_in"], llm["tokens_out"]) == (7, 3)
    assert act["parent"] == 1 and act["actor"] == "worker:legal" and act["pattern"] == "P5"
    assert act["payload"] == '{"args":{"a":"x","b":2}}'
    assert act["digest"] == action_digest("send", {"a": "x", "b": 2})
    assert gate["status"] == "gated" and json.loads(gate["payload"])["reason"] == "over cap"
    assert rows[6]["status"] == "error"
    assert all(r["run_id"] == "full" and r["session_id"] == "c-1" for r in rows)
    assert isinstance(rows[0]["ts"], dt.datetime) and rows[0]["ts"].tzinfo is not None
    assert rows[0]["payload"] == canonical_json({"id": 1})


def test_duckdb_views_read_the_parquet_parts(store: Path) -> None:
    _full_run(store)
    con = connect(Store.open(store))
    cols, rows = run_query(con, "SELECT kind, digest FROM events WHERE kind = 'action'")
    assert cols == ["kind", "digest"] and rows == [("action", action_digest("send", {"a": "x", "b": 2}))]
    _, runs = run_query(con, "SELECT run_id, status, events, sessions FROM runs")
    assert runs == [("full", "complete", 7, 1)]
    plan = "".join(str(r) for r in con.execute("EXPLAIN SELECT * FROM events").fetchall())
    assert "PARQUET" in plan.upper()


def test_listings_read_runs_and_a_timeline(store: Path) -> None:
    _full_run(store)
    st = Store.open(store)
    (run,) = run_rows(st)
    assert tuple(run) == RUN_COLUMNS and run["run_id"] == "full" and run["prompts"] == ["offer@v2"]
    actions = timeline(st, "@latest", kind="action")
    assert actions.run_id == "full" and actions.sessions == ["c-1"] and len(actions) == 1
    assert actions.brief == list(TIMELINE) and actions.columns == list(EVENT_SCHEMA.names)
    (event,) = list(actions)
    assert event["payload"] == {"args": {"a": "x", "b": 2}} and isinstance(event["ts"], str)
    with pytest.raises(UsageError, match="--kind 'acton' is not one of"):
        timeline(st, "full", kind="acton")


def test_manifest_holds_the_required_keys(store: Path) -> None:
    _full_run(store)
    manifest = json.loads((store / "runs" / "full" / "run.json").read_text())
    for key in (
        "run_id",
        "created",
        "source_run",
        "model",
        "prompts",
        "mode",
        "agent",
        "sdbctl_version",
        "git_commit",
        "sessions",
        "events",
        "status",
    ):
        assert key in manifest, key
    assert manifest["prompts"] == ["offer@v2"] and manifest["agent"] == "t"
    assert manifest["meta"] == {"team": "x"} and manifest["status"] == "complete"


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    table = EVENT_SCHEMA.empty_table().replace_schema_metadata({VERSION_KEY: b"99"})
    pq.write_table(table, tmp_path / "v99.parquet")
    with pytest.raises(SchemaError, match=r"v99.parquet: event schema version '99' is not supported"):
        read_file_schema(tmp_path / "v99.parquet")


def test_missing_column_is_refused(tmp_path: Path) -> None:
    meta: dict[bytes | str, bytes | str] = {VERSION_KEY: b"1"}
    schema = pa.schema([f for f in EVENT_SCHEMA if f.name != "digest"], metadata=meta)
    pq.write_table(schema.empty_table(), tmp_path / "nodigest.parquet")
    with pytest.raises(SchemaError, match=r"missing event column.*digest"):
        read_events([tmp_path / "nodigest.parquet"])


def test_foreign_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(SchemaError, match=r"foreign.parquet: not an sdbctl event file"):
        read_file_schema(tmp_path / "foreign.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SchemaError, match=r"corrupt.parquet: not a readable Parquet file"):
        read_file_schema(tmp_path / "corrupt.parquet")


def test_missing_store_and_unknown_run(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound, match="no such directory"):
        Store.open(tmp_path / "nowhere")
    _full_run(tmp_path / "s")
    with pytest.raises(RunNotFound, match=r"run 'nope' not found.*known runs: full"):
        Store.open(tmp_path / "s").manifest("nope")
    assert Store.open(tmp_path / "s").resolve("@latest") == "full"


def test_run_id_cannot_be_reused(store: Path) -> None:
    _full_run(store)
    with pytest.raises(RunExists, match="already exists"):
        Recorder(store=store, run_id="full")
    assert Store.open(store).manifest("full").events == 7


def test_store_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDB_STORE", str(tmp_path / "envstore"))
    with Recorder(run_id="e") as rec:
        rec.session("s").input("x", 1)
    assert (tmp_path / "envstore" / "runs" / "e" / "run.json").is_file()
