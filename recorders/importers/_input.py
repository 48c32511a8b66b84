"""What every importer reads: a TOML map file, a log file as text, a map's dotted path into a JSON
object; one place, so that a bad map or a binary log reads the same to the user in every importer."""

from __future__ import annotations

import contextlib
import gc
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sdbctl.sdb.errors import SdbError


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a log is read and written: each of its full
    passes walks every object alive, and a log's parsed conversations are millions of them (a fifth
    of a large import's time), while an import makes almost no cycles (a few hundred objects in a
    310 MB corpus), which the next pass after it frees."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def get_path(obj: Any, dotted: str) -> Any:
    """The value at a map's dotted path (``info.model``) in a JSON object, or None where it has none."""
    for part in dotted.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return None
        obj = obj[part]
    return obj


def read_map(path: Path) -> dict[str, Any]:
    """A TOML map file as a table; unreadable or not TOML is one line naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SdbError(f"{path}: cannot read the map ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SdbError(f"{path}: not valid TOML ({exc})") from None


def read_text(path: Path, bad: Callable[[str], Exception]) -> str:
    """The text of a log file; a line that is not UTF-8 or holds NUL bytes (a binary file) raises
    ``bad("FILE:LINE: ...")``, an unreadable file is one line naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SdbError(f"{path}: cannot read ({exc.strerror})") from None
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"{path}:{number}: not UTF-8 text (a binary file?)") from None
        if b"\x00" in raw:
            raise bad(f"{path}:{number}: holds NUL bytes (a binary file?)")
    return data.decode("utf-8").lstrip("\ufeff")
