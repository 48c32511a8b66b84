"""What a run is named and what its manifest holds, and where a resumed run's seqs go on from."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Mapping
from typing import Any, Final

from sdbctl.sdb.store import Store

_MANIFEST_KEYS: Final = ("source_run", "model", "prompts", "mode", "agent", "git_commit", "repeat")


def manifest_fields(meta: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``meta`` split into what the run manifest holds as fields (model, prompts, mode, agent,
    source_run, git_commit, repeat) and the rest, which it keeps under ``meta``."""
    rest = dict(meta or {})
    fields: dict[str, Any] = {k: rest.pop(k) for k in _MANIFEST_KEYS if k in rest}
    if isinstance(fields.get("prompts"), str):
        fields["prompts"] = [fields["prompts"]]
    return rest, fields


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 6 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def new_counter(start: int = 0) -> itertools.count[int]:
    """A session's seq counter: ``next()`` of it is the next int, atomically under the GIL (one C call).
    The count itself is kept per session, not its bound ``__next__``: one object the cyclic garbage
    collector tracks per session instead of two (100,000 sessions' counters set off its collections)."""
    return itertools.count(start)


def resumed_counters(store: Store, run_id: str) -> dict[str, itertools.count[int]]:
    """Per-session seq counters that continue after the events already in a run."""
    last: dict[str, int] = {}
    for part in store.part_paths(run_id):
        table = store.loc.read_parquet(part, columns=["session_id", "seq"])
        for row in table.group_by("session_id").aggregate([("seq", "max")]).to_pylist():
            last[row["session_id"]] = max(last.get(row["session_id"], -1), int(row["seq_max"]))
    return {session: new_counter(seq + 1) for session, seq in last.items()}
