"""Explaining one mismatched pair of actions with DeepDiff: which fields changed, old -> new."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deepdiff import DeepDiff

from sdb.diff.config import Tolerance

_ROOT = re.compile(r"^root")


def _path(path: str) -> str:
    """DeepDiff's ``root['a'][0]['b']`` as ``a[0].b``."""
    out = _ROOT.sub("", path)
    out = re.sub(r"\['([^']*)'\]", r".\1", out)
    return out.lstrip(".") or "(arguments)"


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any], tolerance: Tolerance) -> list[dict[str, Any]]:
    """The fields of ``new`` that differ from ``old`` under ``tolerance``: ``{path, old, new}`` each."""
    a, b = tolerance.normalise(old), tolerance.normalise(new)
    diff = DeepDiff(
        a,
        b,
        view="tree",
        ignore_numeric_type_changes=True,
        math_epsilon=tolerance.numeric_tolerance or None,
    )
    changes = []
    for items in diff.values():
        for item in items:
            t1 = None if type(item.t1).__name__ == "NotPresent" else item.t1
            t2 = None if type(item.t2).__name__ == "NotPresent" else item.t2
            changes.append({"path": _path(item.path()), "old": t1, "new": t2})
    return sorted(changes, key=lambda c: c["path"])
