"""The divergences of a comparison, written as they are found, never held as a list.

A diff of 100,000 sessions finds tens of thousands of divergences, each with the fields DeepDiff
explained: held as Python objects until the end they made the differ's memory grow with them. Here
each batch of :data:`BATCH` goes to a Parquet file in a temporary folder of this machine as soon as it
is found, with its sort key; :meth:`Found.finish` then has DuckDB put them in the order every output
lists them, mark each session's first (``after_first``) and write the file the diff saves
(``diffs/<base>..<candidate>/divergences.parquet``, :data:`sdb.events.DIVERGENCE_SCHEMA`), over which
the summary counts (:mod:`sdb.diff._summary`) and from which outputs read them back
(:class:`sdb.diff.Divergences`), in batches or the first N.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sdbctl.sdb.diff._results import Divergence, Divergences, divergences_from
from sdbctl.sdb.events import DIVERGENCE_SCHEMA

BATCH = 4096  #: divergences buffered before they are written

_KEYED = ("base_run", "candidate_run", "after_first")  # set by finish(), not by the comparison
#: what the comparison writes: a divergence's own columns, and its place in the order (``k_text``,
#: ``k_a``, ``k_b``: by step the step and both seqs, by commit the layer and the alignment position;
#: ``n``: the order found, the last tie-break, as Python's stable sort kept it)
_RAW = pa.schema(
    [f for f in DIVERGENCE_SCHEMA if f.name not in _KEYED]
    + [pa.field("k_text", pa.string()), pa.field("k_a", pa.int64()), pa.field("k_b", pa.int64())]
    + [pa.field("n", pa.int64())]
)


def _seq(seq: int | None) -> int:
    return -1 if seq is None else seq


def quoted(path: Path) -> str:
    """``path`` as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


class Found:
    """The divergences one comparison finds, appended in batches to a Parquet file (see the module
    docstring). ``comparison`` sets their order: by step (session, repeat, step, base seq, candidate
    seq), by commit (session, repeat, layer, place in the session's alignment)."""

    def __init__(self, comparison: Literal["commit", "step"]) -> None:
        self.comparison = comparison
        self.folder = Path(tempfile.mkdtemp(prefix="sdbctl-diff-"))
        self.raw = self.folder / "found.parquet"
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[Divergence] = []
        self.count = 0

    def add(self, divergences: Iterable[Divergence]) -> None:
        """Take ``divergences`` (written out every :data:`BATCH`)."""
        for d in divergences:
            self._buffer.append(d)
            if len(self._buffer) >= BATCH:
                self._flush()

    def _flush(self) -> None:
        divs, self._buffer = self._buffer, []
        if not divs:
            return
        by_step = self.comparison == "step"
        columns: dict[str, list[Any]] = {
            name: [getattr(d, name) for d in divs]
            for name in _RAW.names
            if not name.startswith("k_") and name not in ("fields", "n")
        }
        columns["fields"] = [orjson.dumps(d.fields, default=str).decode() for d in divs]
        columns["k_text"] = [(d.step or "") if by_step else d.layer for d in divs]
        columns["k_a"] = [_seq(d.base_seq) if by_step else d.order for d in divs]
        columns["k_b"] = [_seq(d.candidate_seq) if by_step else 0 for d in divs]
        columns["n"] = list(range(self.count, self.count + len(divs)))
        self.count += len(divs)
        table = pa.table({name: columns[name] for name in _RAW.names}, schema=_RAW)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.raw, _RAW)
        self._writer.write_table(table)

    def close(self) -> None:
        """Write what is buffered and close the file (an empty one when nothing was found)."""
        self._flush()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.raw, _RAW)
        self._writer.close()

    def discard(self) -> None:
        """Remove the folder (a diff that failed, or a found set handed on as a copy)."""
        if self._writer is not None:
            self._writer.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def finish(self, con: Any, base: str, candidate: str, left_out: Collection[str]) -> Divergences:
        """The divergences in order, each session's first marked, the sessions ``left_out`` dropped:
        written by DuckDB (out of core past its memory limit) as the file the diff saves, and read
        back from it. The raw file is removed."""
        self.close()
        con.register("_left_out", pa.table({"session_id": pa.array(sorted(left_out), pa.string())}))
        out = self.folder / "divergences.parquet"
        order = "session_id, repeat, k_text, k_a, k_b, n"
        names = [n for n in DIVERGENCE_SCHEMA.names if n not in _KEYED]
        sql = (
            f"SELECT $base AS base_run, $candidate AS candidate_run, {', '.join(names)}, "
            "row_number() OVER (PARTITION BY session_id, repeat, layer ORDER BY k_text, k_a, k_b, n) > 1 "
            "AS after_first "
            f"FROM read_parquet({quoted(self.raw)}) WHERE session_id NOT IN (SELECT session_id FROM _left_out) "
            f"ORDER BY {order}"
        )
        reader = con.sql(sql, params={"base": base, "candidate": candidate}).to_arrow_reader(BATCH * 4)
        count = 0
        with pq.ParquetWriter(out, DIVERGENCE_SCHEMA) as writer:
            for batch in reader:
                table = pa.Table.from_batches([batch]).select(DIVERGENCE_SCHEMA.names).cast(DIVERGENCE_SCHEMA)
                writer.write_table(table)
                count += table.num_rows
        con.unregister("_left_out")
        self.raw.unlink()
        return divergences_from(out, count, self.folder)


__all__ = ["BATCH", "Found", "quoted"]
