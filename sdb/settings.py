"""Where sdbctl's settings live: a table of ``sdbctl.toml`` (``[NAME]``), else of ``pyproject.toml``
(``[tool.sdbctl.NAME]``), in the current directory. Shared by the differ's tolerances and the gate."""

from __future__ import annotations

import importlib
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from sdbctl.sdb.errors import SdbError


def read_table(name: str, directory: Path | None = None) -> tuple[dict[str, Any], str | None]:
    """The ``name`` table and the file it came from; ``({}, None)`` when neither file has one."""
    root = directory or Path.cwd()
    for path, keys in ((root / "sdbctl.toml", (name,)), (root / "pyproject.toml", ("tool", "sdbctl", name))):
        if not path.is_file():
            continue
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SdbError(f"{path}: not valid TOML ({exc})") from None
        for key in keys:
            data = data.get(key, {}) if isinstance(data, Mapping) else {}
        if data:
            return dict(data), str(path)
    return {}, None


def import_from_cwd(module: str) -> ModuleType:
    """Import ``module`` with the current directory on the path (user code named on the command line)."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(module)
