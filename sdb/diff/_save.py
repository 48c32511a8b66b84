"""Saving a diff into the store, where the ``divergences`` view, ``sdbctl diagnose`` and ``sdbctl rm``
find it again."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sdbctl.sdb.diff._results import DiffResult
from sdbctl.sdb.events import DIVERGENCE_SCHEMA
from sdbctl.sdb.results import as_json
from sdbctl.sdb.store import Store


def divergence_table(result: DiffResult) -> pa.Table:
    """The divergences of ``result`` as rows of the ``divergences`` view (``fields`` as JSON text): the
    file the diff wrote (:mod:`sdb.diff._found`), read whole."""
    return pq.read_table(result.divergences.path, schema=DIVERGENCE_SCHEMA)


def save_divergences(store: Store, result: DiffResult) -> None:
    """Write the divergences as ``diffs/<base>..<candidate>/divergences.parquet`` (the ``divergences`` view)
    and the summary beside them as ``summary.json`` (the same JSON as ``--json``), the folder named by
    :func:`sdb.store.diff_key`: one folder per pair of runs, also for ids that hold ``..``. A link planted
    as the folder or either file is refused before anything is written (see :mod:`sdb.store._fs`)."""
    folder = store.diff_dir(result.base_run, result.candidate_run)
    for name in ("divergences.parquet", "summary.json"):
        store.loc.refuse_links(f"{folder}/{name}")
    store.loc.make_dir(folder)
    # the file the diff wrote as it went (sdb.diff._found), published as it is
    store.loc.write_bytes(f"{folder}/divergences.parquet", result.divergences.path.read_bytes())
    summary = orjson.dumps(as_json(result.summary), default=str, option=orjson.OPT_INDENT_2)
    store.loc.write_bytes(f"{folder}/summary.json", summary + b"\n")
