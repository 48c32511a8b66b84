"""The event: sdbctl's data contract. One row per event, written as Parquet with a versioned schema.

This module is the package's whole interface; its modules are private. ``_canonical`` (JSON and
digests), ``_kinds`` (the closed vocabularies), ``_linear`` (llm requests stored as deltas) and
``_sink`` (the :class:`EventSink` protocol) are
cheap and imported with the package; ``_schema`` (the Arrow schema and its checks) and ``_queue``
(the recorder's queue) import pyarrow and are imported on first use of their names
(:func:`sdb.lazy.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdbctl.sdb.events._canonical import (
    action_digest,
    canonical_bytes,
    canonical_json,
    check_json,
    digest,
    json_or_text,
    loads,
    plain_json,
    same_json,
    shared_prefix,
)
from sdbctl.sdb.events._kinds import KINDS, MAX_REPEAT, STATUSES, gate_status, llm_name
from sdbctl.sdb.events._linear import (
    DELTA_KEY,
    RequestChain,
    RequestChains,
    session_requests,
    whole_payload,
    with_requests,
)
from sdbctl.sdb.events._sink import EventSink, MemorySink
from sdbctl.sdb.lazy import lazy_exports

if TYPE_CHECKING:
    from sdbctl.sdb.events._queue import EventQueue
    from sdbctl.sdb.events._schema import (
        COLUMNS,
        DIVERGENCE_SCHEMA,
        EVENT_SCHEMA,
        SCHEMA_VERSION,
        VERSION_KEY,
        batch_from_columns,
        check_schema,
        read_events,
        read_file_schema,
        version_columns,
    )

__all__ = [
    "COLUMNS",
    "DELTA_KEY",
    "DIVERGENCE_SCHEMA",
    "EVENT_SCHEMA",
    "KINDS",
    "MAX_REPEAT",
    "SCHEMA_VERSION",
    "STATUSES",
    "VERSION_KEY",
    "EventQueue",
    "EventSink",
    "MemorySink",
    "RequestChain",
    "RequestChains",
    "action_digest",
    "batch_from_columns",
    "canonical_bytes",
    "canonical_json",
    "check_json",
    "check_schema",
    "digest",
    "gate_status",
    "json_or_text",
    "llm_name",
    "loads",
    "plain_json",
    "read_events",
    "read_file_schema",
    "same_json",
    "session_requests",
    "shared_prefix",
    "version_columns",
    "whole_payload",
    "with_requests",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "EventQueue": "_queue",
        "COLUMNS": "_schema",
        "DIVERGENCE_SCHEMA": "_schema",
        "EVENT_SCHEMA": "_schema",
        "SCHEMA_VERSION": "_schema",
        "VERSION_KEY": "_schema",
        "batch_from_columns": "_schema",
        "check_schema": "_schema",
        "read_events": "_schema",
        "read_file_schema": "_schema",
        "version_columns": "_schema",
    },
)
