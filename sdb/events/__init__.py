"""The event: sdbctl's data contract. One row per event, written as Parquet with a versioned schema.

``canonical`` (JSON and digests) is cheap to import; ``schema`` imports pyarrow.
"""

from sdbctl.sdb.events.canonical import action_digest, canonical_bytes, canonical_json, digest
from sdbctl.sdb.events.kinds import KINDS, STATUSES

__all__ = ["KINDS", "STATUSES", "action_digest", "canonical_bytes", "canonical_json", "digest"]
