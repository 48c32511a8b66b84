"""Explaining one mismatched pair of actions with DeepDiff: which fields changed, old -> new."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from deepdiff import DeepDiff

from sdbctl.sdb.diff._parallel import in_halves
from sdbctl.sdb.diff.config import Tolerance


def field_changes_many(
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]], tolerance: Tolerance
) -> list[list[dict[str, Any]]]:
    """:func:`field_changes` of every pair, in two halves at once where there are many (see
    :mod:`sdb.diff._parallel`): DeepDiff is most of a large diff's time."""
    out: list[list[dict[str, Any]]] = []
    for part in in_halves(functools.partial(field_changes, tolerance=tolerance), pairs):
        out += part
    return out


def field_changes(
    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], tolerance: Tolerance
) -> list[list[dict[str, Any]]]:
    """The fields that differ in each pair (``{path, old, new}``) under one tolerance, in a single
    DeepDiff call: the pairs become two dicts keyed by position, and each change is routed back by the
    first key of its path. DeepDiff's fixed cost per call dominates small argument dicts, so one call
    for all pairs is several times faster than one per pair."""
    if not pairs:
        return []
    old = {f"p{i}": tolerance.normalise(a) for i, (a, _) in enumerate(pairs)}
    new = {f"p{i}": tolerance.normalise(b) for i, (_, b) in enumerate(pairs)}
    # canonical JSON writes an integral float as an integer, so 1 and 1.0 never reach here as a pair;
    # only a numeric tolerance needs DeepDiff to compare ints with floats by value (and costs ~20%)
    tolerant = bool(tolerance.numeric_tolerance)
    diff = DeepDiff(
        old, new, view="tree", ignore_numeric_type_changes=tolerant, math_epsilon=tolerance.numeric_tolerance or None
    )
    out: list[list[dict[str, Any]]] = [[] for _ in pairs]
    for items in diff.values():
        for item in items:
            path = item.path(output_format="list")
            t1 = None if type(item.t1).__name__ == "NotPresent" else item.t1
            t2 = None if type(item.t2).__name__ == "NotPresent" else item.t2
            rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[1:]).lstrip(".")
            out[int(str(path[0])[1:])].append({"path": rest or "(arguments)", "old": t1, "new": t2})
    return [sorted(changes, key=lambda c: c["path"]) for changes in out]
