"""The run manifest (``run.json``): what a run is, where it came from, and whether it finished.

Written atomically (temporary file, then rename) when the run starts, after every part, and when it
ends. ``status`` is ``partial`` until the writer closes the run cleanly, so a run whose writer died
reads as ``partial`` while every part it flushed stays readable. ``part_files`` lists every part the
writer published, with its row count, size and checksum, so that a reader can tell a deleted, extra
or damaged part from the run as it was written (:mod:`sdb.store._integrity`); a manifest written
before that list existed has ``part_files: null`` and is checked on its count of parts only.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdbctl.sdb.errors import SchemaError

RunStatus = Literal["complete", "partial"]


class PartFile(BaseModel):
    """One Parquet part as its writer published it."""

    name: str  # the file's name in the run's directory: events-NNNNN.parquet, events-<shard>-NNNNN.parquet
    rows: int  # events in it
    size: int  # the file's size in bytes
    xxh3: str  # xxh3-64 of the file's bytes, 16 hex digits


class RunManifest(BaseModel):
    """The manifest of one run (a recording or a replay)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    created: str
    source_run: str | None = None
    model: str | None = None
    prompts: list[str] = Field(default_factory=list)
    mode: str = "record"
    agent: str | None = None
    repeat: int | None = None
    sdbctl_version: str
    git_commit: str | None = None
    sessions: int = 0
    events: int = 0
    parts: int = 0
    part_files: list[PartFile] | None = None  # None: written before parts were listed (count checked only)
    status: RunStatus = "partial"
    finished: str | None = None
    interrupted: str | None = None
    recorder: str | None = None
    schema_version: str = "1"
    meta: dict[str, Any] = Field(default_factory=dict)


def parse_manifest(data: bytes, where: str) -> RunManifest:
    """Validate a manifest's bytes; a damaged one is a one-line :class:`SchemaError` naming ``where``."""
    try:
        return RunManifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise SchemaError(f"{where}: not a valid run manifest ({loc}: {first['msg']})") from None


def manifest_bytes(manifest: RunManifest) -> bytes:
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
