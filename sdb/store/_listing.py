"""A run's listing checked against its manifest without reading a part, and the names of its parts.

What a listing of a run's directory shows is enough to tell most damage (a listed part missing or of
another size, a part no writer of the run published): ``sdbctl runs`` checks only this (through
:meth:`Store.entries <sdb.store._layout.Store.entries>`); reading a run checks each part's bytes too
(:mod:`sdb.store._integrity`, whose docstring has the rules).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from sdbctl.sdb.errors import SchemaError
from sdbctl.sdb.store._manifest import PartFile, RunManifest

if TYPE_CHECKING:
    import pyarrow.fs as pafs

PART_GLOB: Final = "events-*.parquet"
# events-NNNNN.parquet (a writer of the run) or events-<shard>-NNNNN.parquet (a shard of a Ray replay)
PART_NAME: Final = re.compile(r"events-(?:(?P<shard>[a-z0-9]{1,16})-)?(?P<n>[0-9]{5,})\.parquet")


class DamagedRun(SchemaError):
    """A run whose parts on disk are not the parts its manifest lists (missing, extra or changed)."""


def part_key(name: str) -> tuple[str, int] | None:
    """(writer prefix, number) of a part name a writer of sdbctl publishes, else None."""
    m = PART_NAME.fullmatch(name)
    if m is None:
        return None
    shard = m.group("shard")
    return (f"events-{shard}-" if shard else "events-", int(m.group("n")))


def check_listing(manifest: RunManifest, on_disk: Iterable[pafs.FileInfo]) -> list[str]:
    """The names of the parts ``manifest`` does not list (a partial run's latest), after checking what
    a listing of the run's directory shows against the manifest without reading a part: each listed
    part there with its size, no part a complete run's writer did not publish, the numbering of the
    unlisted ones (see :mod:`sdb.store._integrity`); a mismatch is a one-line :class:`DamagedRun`.
    This is all ``sdbctl runs`` checks; :func:`~sdb.store._integrity.checked_parts` reads the parts
    too."""
    run = manifest.run_id
    parts = run_parts(on_disk)
    if manifest.part_files is None:
        counted, found = manifest.parts, len(parts)
        if found < counted or (found > counted and manifest.status == "complete"):
            raise DamagedRun(
                f"run {run!r} is damaged: {found} part(s) on disk, its manifest counts {counted} "
                "(a part is missing or extra; the run predates per-part checksums, so which one is not known)"
            )
        return sorted(parts)
    listed = {p.name: p for p in manifest.part_files}
    for name, entry in listed.items():
        if name not in parts:
            raise DamagedRun(
                f"run {run!r} is damaged: part {name} is missing (its manifest lists it, {entry.rows} events)"
            )
    unlisted = sorted(set(parts) - set(listed))
    if unlisted and manifest.status == "complete":
        raise DamagedRun(
            f"run {run!r} is damaged: part {unlisted[0]} is not in its manifest (no writer of the run published it)"
        )
    _check_numbering(run, listed, unlisted)
    for name, entry in listed.items():
        size = parts[name].size
        if size is not None and size != entry.size:
            raise DamagedRun(f"run {run!r} is damaged: part {name} has {size} bytes, its manifest says {entry.size}")
    return unlisted


def run_parts(on_disk: Iterable[pafs.FileInfo]) -> dict[str, pafs.FileInfo]:
    """The parts among the files of a run's directory, by name."""
    return {i.path.rsplit("/", 1)[-1]: i for i in on_disk if _is_part(i.path)}


def _check_numbering(run: str, listed: dict[str, PartFile], unlisted: list[str]) -> None:
    """Unlisted parts of a partial run must be the ones its writers would have published next."""
    numbers: dict[str, list[int]] = {}
    for name in [*listed, *unlisted]:
        key = part_key(name)
        if key is None:
            raise DamagedRun(f"run {run!r} is damaged: {name} is not a part name sdbctl writes")
        numbers.setdefault(key[0], []).append(key[1])
    for name in unlisted:
        prefix, n = part_key(name) or ("", 0)
        last_listed = max((k[1] for k in map(part_key, listed) if k is not None and k[0] == prefix), default=-1)
        if n < last_listed:
            raise DamagedRun(
                f"run {run!r} is damaged: part {name} is not in its manifest, which lists later parts of its writer"
            )
    for prefix, seen in numbers.items():
        missing = sorted(set(range(max(seen) + 1)) - set(seen))
        if missing:
            raise DamagedRun(f"run {run!r} is damaged: part {prefix}{missing[0]:05d}.parquet is missing")


def _is_part(path: str) -> bool:
    return fnmatch.fnmatch(path.rsplit("/", 1)[-1], PART_GLOB)
