"""``sdbctl rm``: removing runs, with the diffs that compared them and the cached answers they asked.

A run is removed whole or not at all: its diffs go first (a diff of a run that no longer exists is
noise), then the response-cache entries its replay wrote (the keys are rebuilt from its llm events:
provider, request, seed and the server asked), then the run's folder. The bulk forms (``older_than``, ``keep_last``)
choose runs in the store's order of runs (their creation time as far as it is believed: see
:mod:`sdb.store._layout`); the CLI makes them a dry run unless told otherwise.

A run is its folder: ``rm junk`` removes ``runs/junk`` whatever its manifest says, so a damaged run
(a manifest that is garbage or names another run, a part missing) is removed like any other; only
the cache entries of a run whose events cannot be read are left (their keys cannot be rebuilt).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field

import orjson

from sdbctl.sdb.errors import SchemaError, SdbError, UsageError
from sdbctl.sdb.events import with_requests
from sdbctl.sdb.replay import cache_key, cache_path, settle_journals
from sdbctl.sdb.store import LATEST, RunManifest, Store, connect

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Removal:
    """What a removal did (or, in a dry run, would do)."""

    runs: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    cache_entries: int = 0
    dry_run: bool = False


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as a duration; anything else is a one-line error."""
    found = _AGE.match(text.strip())
    if found is None:
        raise UsageError(f"--older-than {text!r}: use a number and a unit, e.g. 30d, 12h, 90m, 2w")
    return dt.timedelta(seconds=int(found.group(1)) * _UNIT[found.group(2)])


def choose(
    store: Store,
    run_ids: list[str],
    *,
    older_than: str | None = None,
    keep_last: int | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """The runs named (``@latest`` too, damaged or not; an unknown id is an error, before anything is
    removed), plus the runs older than ``older_than``, plus all but the newest ``keep_last``: each a
    folder of ``runs/``, damaged runs among them."""
    entries = store.entries()  # oldest first
    folders = {e.run_id for e in entries}
    chosen = []
    for ref in run_ids:
        run_id = store.latest().run_id if ref == LATEST else store.resolve(ref)  # @latest: even damaged
        if run_id not in folders:
            store.manifest(run_id)  # RunNotFound, naming the known runs
        chosen.append(run_id)
    if older_than is not None:
        limit = (now or dt.datetime.now(dt.UTC)) - parse_age(older_than)
        chosen += [e.run_id for e in entries if e.when < limit]
    if keep_last is not None:
        if keep_last < 0:
            raise UsageError(f"--keep-last {keep_last}: must be 0 or more")
        chosen += [e.run_id for e in entries[: max(0, len(entries) - keep_last)]]
    return list(dict.fromkeys(chosen))


def _saved_diffs(store: Store) -> dict[str, tuple[object, object]]:
    """Every saved diff's folder and the (base, candidate) its summary names, read once."""
    out: dict[str, tuple[object, object]] = {}
    for path in store.divergence_paths():
        folder = path.rsplit("/", 1)[0]
        try:
            summary = orjson.loads(store.loc.read_bytes(f"{folder}/summary.json"))
        except (OSError, SdbError, orjson.JSONDecodeError):
            continue
        if isinstance(summary, dict):
            out[folder] = (summary.get("base_run"), summary.get("candidate_run"))
    return out


def _cache_keys(store: Store, m: RunManifest | None) -> list[str]:
    """The cache keys a replay run's answers were stored under (none for a recording, nor for a run
    whose manifest or events cannot be read: a damaged run is removed all the same)."""
    saved = m.meta.get("replay") if m is not None and isinstance(m.meta.get("replay"), dict) else None
    if m is None or saved is None or (m.repeat or 1) > 1:
        return []  # repeats never write the cache
    seed = saved.get("seed") or 0
    endpoint = saved.get("endpoint")  # the server its answers came from (none: a simulator, an older run)
    if not isinstance(seed, int) or not isinstance(endpoint, str | None):
        return []
    try:
        con = connect(store, m.run_id)
    except SchemaError:  # a damaged part: the run goes, its keys cannot be known
        return []
    keys = []
    sql = "SELECT session_id, seq, model, payload FROM events WHERE kind = 'llm' ORDER BY session_id, seq"
    rows = (dict(zip(("session_id", "seq", "model", "payload"), r, strict=True)) for r in con.execute(sql).fetchall())
    try:
        for row, _, request in with_requests(rows, f"run {m.run_id}"):
            if request is not None:  # a payload that is not an object: no request to key
                keys.append(cache_key(str(row["model"]), request, seed, endpoint))
    except SchemaError:  # a damaged chain of requests: the run goes, the keys found so far with it
        pass
    return keys


def remove_runs(store: Store, run_ids: list[str], *, dry_run: bool = False) -> Removal:
    """Remove each run in ``run_ids`` with its diffs and cache entries (see the module docstring)."""
    done = Removal(dry_run=dry_run)
    cache = cache_path(store)  # this machine's cache of the store, never one inside it
    saved = _saved_diffs(store)
    entries = {e.run_id: e for e in store.entries()}
    for run_id in run_ids:
        entry = entries.get(run_id)
        if entry is None:
            store.manifest(run_id)  # RunNotFound, naming the known runs
            continue
        m = entry.manifest if entry.problem is None else None
        diffs = sorted(folder for folder, pair in saved.items() if run_id in pair)
        for folder in diffs:  # a diff of two removed runs goes with the first
            del saved[folder]
        keys = _cache_keys(store, m) if cache.exists() else []
        done.runs.append(run_id)
        done.diffs += diffs
        if dry_run:
            done.cache_entries += len(keys)
            continue
        # the run leaves the listing in one step (a rename out of runs/), then what hangs off it goes
        trash = None
        if not store.loc.remote:
            trash = store.root / ".trash" / f"{run_id}-{os.getpid()}"
            store.loc.refuse_links(str(trash))  # a .trash planted as a link would move the run out of the store
            trash.parent.mkdir(exist_ok=True)
            os.rename(store.run_dir(run_id), trash)
        for folder in diffs:
            store.loc.delete_dir(folder)
        if keys:
            settle_journals(cache)  # a killed replay's answers still in its journal go too
            with sqlite3.connect(cache, timeout=60) as db:
                before = db.total_changes
                db.executemany("DELETE FROM completions WHERE key = ?", [(k,) for k in keys])
                done.cache_entries += db.total_changes - before
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        else:
            store.delete_run(run_id)
    return done
