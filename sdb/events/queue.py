"""The recorder's queue of events between the caller and the background writer.

Two implementations with one interface and one output: :class:`NativeQueue` keeps the events as
columns in C (``sdb._native``, built when a C compiler is there), so that a flush hands pyarrow ready
buffers; :class:`ListQueue` is the pure-Python fallback, one flat list of row values. Both queue an
event with one step that no other thread can split, and both turn the queue into the same record
batch. A row is the tuple of an event's columns after ``run_id``, in schema order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from sdbctl.sdb.events.schema import COLUMNS, EVENT_SCHEMA, batch_from_columns
from sdbctl.sdb.native import native as _native

Vocabulary = tuple[set[str], set[str], set[str]]

ROW_WIDTH: Final = len(COLUMNS) - 1
_TS: Final = COLUMNS.index("ts")
_PAYLOAD: Final = COLUMNS.index("payload")
_MAYBE_CONSTANT: Final = tuple(
    COLUMNS.index(c)
    for c in (
        "session_id",
        "step",
        "parent",
        "kind",
        "actor",
        "pattern",
        "name",
        "model",
        "prompt",
        "status",
        "latency_ms",
        "tokens_in",
        "tokens_out",
    )
)


def _value_type(i: int) -> Any:
    field_type = EVENT_SCHEMA.field(i).type
    return pa.string() if pa.types.is_dictionary(field_type) else field_type


class EventQueue(Protocol):
    gate: bool
    # the last batch's distinct session ids, prompts and models, when the queue knows them
    vocabulary: Vocabulary | None

    def append(self, row: tuple[Any, ...]) -> None: ...
    def append_held(self, values: list[Any]) -> None: ...
    def __len__(self) -> int: ...
    def batch(self, run_id: str) -> tuple[int, pa.RecordBatch | None]: ...
    def drop(self, rows: int) -> None: ...


class ListQueue:
    """One flat list: each event extends it by ROW_WIDTH values. ``list.extend`` of a tuple is atomic
    under the GIL, so no lock is taken per event, and a flush takes one slice per column."""

    def __init__(
        self,
        flush_rows: int,
        wake: Callable[[], Any],
        gated: Callable[[tuple[Any, ...]], Any],
        counters: dict[str, Any] | None = None,
    ) -> None:
        self.gate = False
        self.vocabulary: Vocabulary | None = None  # the writer reads it off the batch
        self._items: list[Any] = []
        self._flush_items = flush_rows * ROW_WIDTH
        self._wake = wake
        self._gated = gated

    def append(self, row: tuple[Any, ...]) -> None:
        """Queue one row; while ``gate`` is set (recorder closed, a unit() block open) ``gated`` decides."""
        if self.gate:
            self._gated(row)
            return
        items = self._items
        items.extend(row)
        if len(items) == self._flush_items:  # once: the writer goes on while the queue stays that long
            self._wake()

    def append_held(self, values: list[Any]) -> None:
        """Queue the flattened rows of a unit() block with one ``list.extend``: no flush splits them."""
        before = len(self._items)
        self._items.extend(values)
        if before < self._flush_items <= len(self._items):
            self._wake()

    def __len__(self) -> int:
        return len(self._items) // ROW_WIDTH

    def batch(self, run_id: str) -> tuple[int, pa.RecordBatch | None]:
        """The queued events as one record batch (nothing removed: :meth:`drop` once it is published)."""
        queue = self._items
        taken = len(queue)
        n = taken // ROW_WIDTH
        if n == 0:
            return 0, None
        columns: list[Any] = [pa.repeat(run_id, n)]
        columns += [queue[i:taken:ROW_WIDTH] for i in range(ROW_WIDTH)]
        # vectorised where Python conversion would cost: ns -> us, and payload bytes (valid UTF-8
        # from orjson) taken as binary and viewed as string without a second validation pass
        columns[_TS] = pc.divide(pa.array(columns[_TS], pa.int64()), 1000)
        columns[_PAYLOAD] = pa.array(columns[_PAYLOAD], pa.binary()).view(pa.string())
        # A column with one value throughout (one session, one actor, no model...) is common: one
        # C-level count finds it, and a repeated scalar replaces converting every element.
        for i in _MAYBE_CONSTANT:
            values = columns[i]
            first = values[0]
            if values.count(first) == n:
                columns[i] = pa.repeat(pa.scalar(first, _value_type(i)), n)
        return n, batch_from_columns(columns)

    def drop(self, rows: int) -> None:
        # callers only extend the end; the flush (under the recorder's lock) cuts the front
        del self._items[: rows * ROW_WIDTH]


if _native is not None:

    class NativeQueue(_native.EventBuffer):  # type: ignore[name-defined,misc]
        """The events as C columns (``sdb/_native.c``), handed to pyarrow as one Arrow C array."""

        vocabulary: Vocabulary | None = None

        text_limit = 2**31 - 1  # bytes of text in one part: an Arrow string column's limit

        def batch(self, run_id: str) -> tuple[int, pa.RecordBatch | None]:
            n, address, owner, self.vocabulary = self.export(run_id, self.text_limit)
            if n == 0:
                return 0, None
            try:
                return n, pa.RecordBatch._import_from_c(address, EVENT_SCHEMA)
            finally:
                del owner  # frees the exported struct (its buffers now belong to the batch)


def new_queue(
    flush_rows: int,
    wake: Callable[[], Any],
    gated: Callable[[tuple[Any, ...]], Any],
    counters: dict[str, Any] | None = None,
) -> EventQueue:
    """The C queue when the extension is built, else the pure-Python one. ``counters`` (session id ->
    seq counter) is the recorder's: the C queue hands them out itself."""
    if _native is not None:
        return NativeQueue(flush_rows, wake, gated, {} if counters is None else counters)
    return ListQueue(flush_rows, wake, gated, counters)
