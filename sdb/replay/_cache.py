"""The response cache: a SQLite file in the store, keyed by (provider, seed, canonical request).

Replaying the same run twice asks the model once. SQLite (standard library) gives atomic writes and
safe concurrent readers; the cache is an optimisation, never the truth: deleting it changes nothing
but the number of model calls.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson
import xxhash

from sdbctl.sdb.events import canonical_bytes


def cache_key(provider: str, request: Any, seed: int) -> str:
    """The key an answer is cached under; ``sdbctl rm`` rebuilds it from a run's llm events."""
    return xxhash.xxh3_128_hexdigest(canonical_bytes({"provider": provider, "request": request, "seed": seed}))


class ResponseCache:
    """Completions (``{"response", "truth"}``) by key, in ``<store>/cache/responses.sqlite``."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "responses.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, completion BLOB NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT completion FROM completions WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def put(self, key: str, completion: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?)", (key, orjson.dumps(completion)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
