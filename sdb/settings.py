"""Where sdbctl's settings live: a table of ``sdbctl.toml`` (``[NAME]``), else of ``pyproject.toml``
(``[tool.sdbctl.NAME]``), in the current directory. Shared by the differ's tolerances and the gate."""

from __future__ import annotations

import importlib
import math
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
        for depth, key in enumerate(keys):
            data = data.get(key, {})
            if not isinstance(data, Mapping):  # `gate = 5`: a table of the wrong type is named, not skipped
                raise SdbError(f"{path}: {'.'.join(keys[: depth + 1])} must be a table, not {data!r}")
        if data:
            return dict(data), str(path)
    return {}, None


def section(name: str, source: str | None) -> str:
    """The table ``name`` as the user wrote it (``[tool.sdbctl.NAME]`` in pyproject.toml, else
    ``[NAME]``), so that an error names the table they can find."""
    return f"[tool.sdbctl.{name}]" if source and Path(source).name == "pyproject.toml" else f"[{name}]"


def check_names(value: Any, where: str, what: str = "a list of action names or globs") -> tuple[str, ...]:
    """``value`` as a tuple of non-empty strings; anything else is a one-line error naming ``where``
    (a config file's key or a flag)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SdbError(f"{where} must be {what}, not {value!r}")
    return tuple(value)


def check_number(
    value: Any,
    where: str,
    *,
    low: float = 0.0,
    high: float = math.inf,
    open_low: bool = False,
    open_high: bool = False,
    what: str | None = None,
) -> float:
    """``value`` as a finite float within [low, high] (an end excluded when ``open_*``); anything else
    (a boolean, text, NaN, infinity) is a one-line error naming ``where``. A NaN compares false with
    every figure, so a NaN limit would never fail; infinity neither."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (low < value if open_low else low <= value)
        and (value < high if open_high else value <= high)
    )
    if not ok:
        if what is None:
            lo, hi = "(" if open_low else "[", ")" if open_high or high == math.inf else "]"
            what = f"a finite number in {lo}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{hi}"
        raise SdbError(f"{where} must be {what}, not {value!r}")
    return float(value)


def import_from_cwd(module: str) -> ModuleType:
    """Import ``module`` with the current directory on the path (user code named on the command line)."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(module)
