"""The recorder's queue of events between the caller and the background writer.

One flat list of row values: an event is queued with one step that no other thread can split, and a
flush turns the queue into one record batch. A row is the tuple of an event's columns after
``run_id``, in schema order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from sdbctl.sdb.events._schema import COLUMNS, EVENT_SCHEMA, batch_from_columns

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
        "replay",
    )
)


def _value_type(i: int) -> Any:
    field_type = EVENT_SCHEMA.field(i).type
    return pa.string() if pa.types.is_dictionary(field_type) else field_type


class EventQueue:
    """One flat list: each event extends it by ROW_WIDTH values. ``list.extend`` of a tuple is atomic
    under the GIL, so no lock is taken per event, and a flush takes one slice per column."""

    def __init__(
        self,
        flush_rows: int,
        wake: Callable[[], Any],
        gated: Callable[[tuple[Any, ...]], Any],
    ) -> None:
        self.gate = False  # while set (recorder closed, a unit() block open), ``gated`` takes each row
        self._items: list[Any] = []
        self._flush_items = flush_rows * ROW_WIDTH
        self._wake = wake
        self._gated = gated

    def append(self, row: tuple[Any, ...]) -> bool:
        """Queue one row; while ``gate`` is set (recorder closed, a unit() block open) ``gated`` decides.
        False when the row is held back (this thread's unit() block) rather than queued now."""
        if self.gate:
            return self._gated(row) is not False
        items = self._items
        items.extend(row)
        if len(items) == self._flush_items:  # once: the writer goes on while the queue stays that long
            self._wake()
        return True

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
