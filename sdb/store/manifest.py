"""The run manifest (``run.json``): what a run is, where it came from, and whether it finished.

Written atomically (temporary file, then rename) when the run starts, after every part, and when it
ends. ``status`` is ``partial`` until the writer closes the run cleanly, so a run whose writer died
reads as ``partial`` while every part it flushed stays readable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdb.errors import SchemaError

RunStatus = Literal["complete", "partial"]


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
    status: RunStatus = "partial"
    finished: str | None = None
    interrupted: str | None = None
    recorder: str | None = None
    schema_version: str = "1"
    meta: dict[str, Any] = Field(default_factory=dict)


def read_manifest(path: Path) -> RunManifest:
    """Read and validate a manifest; a damaged one is a one-line :class:`SchemaError`."""
    try:
        return RunManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise SchemaError(f"{path}: not a valid run manifest ({where}: {first['msg']})") from None
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read run manifest ({exc.strerror})") from None


def write_manifest(path: Path, manifest: RunManifest) -> None:
    """Write ``manifest`` to ``path`` atomically: a reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
