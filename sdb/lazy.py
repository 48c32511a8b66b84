"""Lazy exports: a package names its whole API in ``__init__`` without importing what is heavy.

``sdbctl --help`` must stay fast, and a package such as :mod:`sdb.store` exports functions whose
modules import duckdb; importing the package for its cheap names must not pay for those. A package
imports its heavy names under ``TYPE_CHECKING`` (so type checkers see them) and sets
``__getattr__ = lazy_exports(__name__, {name: module})``: the module is imported on first use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``package.<where[name]>`` on first use of
    ``name`` and keeps the value in the package, so the next use is a plain attribute."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
