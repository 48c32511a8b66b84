"""The Arrow schema of an event file, its version, and the checks a reader makes before trusting one.

The version is written into the Parquet key-value metadata under ``sdb.schema_version``. A reader
refuses a file of another version, a file with no version (not ours), and a file missing a column
its version has, each with one line naming the file: such a file is never misread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from sdbctl.sdb.errors import SchemaError

SCHEMA_VERSION: Final = "3"
# 1: every llm request whole; 2: requests may be deltas (sdb.events._linear); 3: the column ``replay``
READABLE_VERSIONS: Final = ("1", "2", "3")
#: the columns a version before 3 lacks: the store's ``events`` view derives them (sdb.store._views)
ADDED_IN_3: Final = ("replay",)
VERSION_KEY: Final = b"sdb.schema_version"
KIND_TYPE: Final = pa.dictionary(pa.int8(), pa.string())

_FIELDS: Final[list[pa.Field[Any]]] = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("step", pa.string()),
    pa.field("parent", pa.int64()),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("kind", KIND_TYPE, nullable=False),
    pa.field("actor", pa.string(), nullable=False),
    pa.field("pattern", pa.string(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("model", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("payload", pa.string(), nullable=False),
    pa.field("digest", pa.uint64(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("latency_ms", pa.float64()),
    pa.field("tokens_in", pa.int64()),
    pa.field("tokens_out", pa.int64()),
    # the replay mark the event was written with (canonical JSON, as in its payload's "replay"), else null
    pa.field("replay", pa.string()),
]
EVENT_SCHEMA: Final = pa.schema(_FIELDS, metadata={VERSION_KEY: SCHEMA_VERSION.encode()})

COLUMNS: Final[tuple[str, ...]] = tuple(EVENT_SCHEMA.names)

# One row per divergence found by the differ (``diffs/<base>..<candidate>/divergences.parquet``).
_DIVERGENCE_STRINGS = ("base_run", "candidate_run", "session_id", "step")
DIVERGENCE_SCHEMA: pa.Schema = pa.schema(
    [pa.field(n, pa.string()) for n in _DIVERGENCE_STRINGS]
    + [pa.field(n, pa.int64()) for n in ("repeat", "base_seq", "candidate_seq")]
    + [pa.field(n, pa.string()) for n in ("reason", "base_action", "candidate_action", "pattern", "fields")]
    + [pa.field("layer", pa.string()), pa.field("similarity", pa.float64()), pa.field("after_first", pa.bool_())]
)


def batch_from_columns(columns: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """Build a record batch from one Python sequence (or Arrow array) per column, in :data:`COLUMNS` order.

    ``ts`` is given as integer microseconds since the epoch (UTC) or as datetimes.
    """
    arrays = [
        (col if col.type == field.type else col.cast(field.type))
        if isinstance(col, pa.Array)
        else pa.array(col, type=field.type)
        for col, field in zip(columns, EVENT_SCHEMA, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


def check_schema(schema: pa.Schema, source: str) -> str:
    """The schema version of ``schema``; a :class:`SchemaError` unless it is an event schema of a
    version we read, with every column of that version."""
    meta = schema.metadata or {}
    version = meta.get(VERSION_KEY)
    if version is None:
        raise SchemaError(f"{source}: not an sdbctl event file (no {VERSION_KEY.decode()} in its metadata)")
    if version.decode() not in READABLE_VERSIONS:
        raise SchemaError(
            f"{source}: event schema version {version.decode()!r} is not supported "
            f"(this sdbctl reads versions {', '.join(READABLE_VERSIONS)}); upgrade sdbctl to read it"
        )
    missing = [name for name in version_columns(version.decode()) if name not in schema.names]
    if missing:
        raise SchemaError(f"{source}: missing event column(s) {', '.join(missing)}")
    # a column of another kind of value is refused, whatever its width or encoding: a number held as
    # text fails later as a traceback, and a mark of another type would read as no mark (a run's marks lost)
    for expected in EVENT_SCHEMA:
        if expected.name in schema.names:
            found = schema.field(expected.name).type
            wanted = _unreadable(found, expected.type)
            if wanted is not None:
                raise SchemaError(f"{source}: event column {expected.name} is {found}, not {wanted}")
    return version.decode()


def _unreadable(found: pa.DataType, expected: pa.DataType) -> str | None:
    """None when a column of type ``found`` reads as ``expected`` (the same kind of value: text, whole
    number, number, time, whatever its width or encoding), else what it should hold, in words."""
    found = found.value_type if pa.types.is_dictionary(found) else found
    expected = expected.value_type if pa.types.is_dictionary(expected) else expected
    if pa.types.is_string(expected):
        return None if pa.types.is_string(found) else "a string"
    if pa.types.is_integer(expected):
        return None if pa.types.is_integer(found) else "a whole number"
    if pa.types.is_floating(expected):
        return None if pa.types.is_floating(found) or pa.types.is_integer(found) else "a number"
    return None if pa.types.is_timestamp(found) else "a timestamp"


def version_columns(version: str) -> tuple[str, ...]:
    """The event columns a file of schema ``version`` holds (a readable version)."""
    return COLUMNS if version == SCHEMA_VERSION else tuple(c for c in COLUMNS if c not in ADDED_IN_3)


def read_file_schema(path: Path | str) -> pa.Schema:
    """Read and check the schema in a Parquet footer; a corrupt file is a :class:`SchemaError`."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    check_schema(schema, str(path))
    return schema


def read_events(paths: Iterable[Path | str]) -> pa.Table:
    """Read event files into one table after checking each; an empty list gives an empty table. A
    file of a version before 3 has no ``replay``: null here (the store's ``events`` view derives it)."""
    tables = []
    for path in paths:
        version = read_file_schema(path).metadata[VERSION_KEY].decode()
        try:
            table = pq.read_table(path, columns=list(version_columns(version)))
            for name in COLUMNS[table.num_columns :]:  # the columns added since: at the end
                field = EVENT_SCHEMA.field(name)
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
            tables.append(table)
        except (pa.ArrowException, OSError) as exc:
            raise SchemaError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if not tables:
        return EVENT_SCHEMA.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
