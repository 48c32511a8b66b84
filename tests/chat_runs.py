"""The airline chat fixtures and the CLI steps that the ``import chat`` and ``export --format chat``
tests share: a command that must succeed, a run's events by session, the fixtures imported as a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import CLI

REPO = Path(__file__).resolve().parent.parent
CHAT = REPO / "fixtures" / "chat"
TRIALS = [str(CHAT / "trial-a.jsonl"), str(CHAT / "trial-b.jsonl")]
MAP = str(CHAT / "map.toml")


def ok(out: Any) -> Any:
    """``out``, once its command succeeded (its stderr is the failure's message)."""
    assert out.returncode == 0, out.stderr
    return out


def shown_events(sdbctl: CLI, run: str) -> list[dict[str, Any]]:
    """Every event of ``run``, as ``sdbctl show --json --full`` prints them (llm requests whole)."""
    return list(json.loads(ok(sdbctl("show", run, "--limit", "0", "--json", "--full")).stdout))


def by_session(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["session_id"], []).append(e)
    return out


def import_airline(sdbctl: CLI, run: str = "air") -> dict[str, Any]:
    """The two airline trials imported as ``run``, with their map; the import's JSON summary."""
    return dict(json.loads(ok(sdbctl("import", "chat", *TRIALS, "--map", MAP, "--run-id", run, "--json")).stdout))


def query_rows(sdbctl: CLI, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sdbctl query SQL --json``, sorted: compared as sets, whatever order DuckDB chose."""
    rows = json.loads(ok(sdbctl("query", sql, "--json")).stdout)
    return sorted(tuple(r.values()) for r in rows)
