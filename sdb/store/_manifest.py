"""The run manifest (``run.json``): what a run is, where it came from, and whether it finished.

Written atomically (temporary file, then rename) when the run starts, after every part, and when it
ends. ``status`` is ``partial`` until the writer closes the run cleanly, so a run whose writer died
reads as ``partial`` while every part it flushed stays readable. ``part_files`` lists every part the
writer published, with its row count, size and checksum, so that a reader can tell a deleted, extra
or damaged part from the run as it was written (:mod:`sdb.store._integrity`); a manifest written
before that list existed has ``part_files: null`` and is checked on its count of parts only.

A manifest is read from a store, which may have been tampered with, so it is parsed strictly: every
field of its type as JSON writes it (no ``"3"`` for 3, no float for a count), every count from 0 to
the largest int64 (the DuckDB ``runs`` view's type), times as ISO-8601, the status one of the two;
anything else is the one-line :class:`SchemaError` naming the file (:func:`parse_manifest`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdbctl.sdb.errors import SchemaError

RunStatus = Literal["complete", "partial"]
RUN_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # a safe directory name (check_run_id)
INT64_MAX: Final = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]  # a count as the store's views hold it (int64)


class PartFile(BaseModel):
    """One Parquet part as its writer published it."""

    name: str  # the file's name in the run's directory: events-NNNNN.parquet, events-<shard>-NNNNN.parquet
    rows: Count  # events in it
    size: Count  # the file's size in bytes
    xxh3: str = Field(pattern=r"^[0-9a-f]{16}$")  # xxh3-64 of the file's bytes, 16 hex digits


class RunManifest(BaseModel):
    """The manifest of one run (a recording or a replay)."""

    model_config = ConfigDict(extra="allow")

    run_id: str = Field(pattern=f"^{RUN_ID_PATTERN}$")  # its folder's name (checked by the store)
    created: str
    source_run: str | None = None
    model: str | None = None
    prompts: list[str] = Field(default_factory=list)
    mode: str = "record"
    agent: str | None = None
    repeat: Count | None = None
    sdbctl_version: str
    git_commit: str | None = None
    sessions: Count = 0
    events: Count = 0
    parts: Count = 0
    part_files: list[PartFile] | None = None  # None: written before parts were listed (count checked only)
    status: RunStatus = "partial"
    finished: str | None = None
    interrupted: str | None = None
    recorder: str | None = None
    schema_version: str = "1"
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created", "finished")
    @classmethod
    def check_time(cls, value: str | None) -> str | None:
        """An ISO-8601 time, kept as written (the ordering of runs and ``rm --older-than`` parse it)."""
        if value is not None:
            try:
                dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("not an ISO-8601 time") from None
        return value


def parse_manifest(data: bytes, where: str) -> RunManifest:
    """Validate a manifest's bytes; a damaged one is a one-line :class:`SchemaError` naming ``where``."""
    try:
        return RunManifest.model_validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise SchemaError(f"{where}: not a valid run manifest ({loc}: {first['msg']})") from None


def manifest_bytes(manifest: RunManifest) -> bytes:
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
