"""Explaining mismatched pairs of actions: which fields changed, old -> new (DeepDiff), or how far
two texts of speech are apart (similarity); both comparisons, by step and by commit, end here."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from deepdiff import DeepDiff

from sdbctl.sdb.diff._compared import Pending
from sdbctl.sdb.diff._config import DiffConfig, Tolerance
from sdbctl.sdb.diff._parallel import in_halves
from sdbctl.sdb.diff._results import Divergence
from sdbctl.sdb.diff._speech import similarity


def explain(pending: Pending, config: DiffConfig, closed_loop: bool) -> list[Divergence]:
    """Explain the pending same-action pairs whose digests differ. Speech: by similarity, a
    ``speech_changed`` below the threshold. Else DeepDiff, one call per action (its tolerance):
    ``args_changed`` with the field paths, or nothing when the tolerances absorb the difference (or
    ``gate_changed`` when only the guard's verdict moved)."""
    by_action: dict[str, Pending] = defaultdict(list)
    for item in pending:
        by_action[item[2]["name"]].append(item)
    out: list[Divergence] = []
    for action, items in by_action.items():
        pairs = [
            (orjson.loads(b["payload"]).get("args") or {}, orjson.loads(c["payload"]).get("args") or {})
            for _, b, c in items
        ]
        if items[0][0].layer == "speech":
            for (div, b, c), (old, new) in zip(items, pairs, strict=True):
                score = similarity(old, new)
                if score < config.speech_threshold:
                    div.reason, div.similarity = "speech_changed", score
                    out.append(div)
                elif closed_loop and b["status"] != c["status"]:
                    div.reason = "gate_changed"
                    out.append(div)
            continue
        for (div, b, c), fields in zip(items, field_changes_many(pairs, config.tolerance(action)), strict=True):
            if fields:
                div.fields = fields
                out.append(div)
            elif closed_loop and b["status"] != c["status"]:
                div.reason = "gate_changed"
                out.append(div)
    return out


def field_changes_many(
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]], tolerance: Tolerance
) -> list[list[dict[str, Any]]]:
    """:func:`field_changes` of every pair; the pairs left to DeepDiff in two halves at once where there
    are many (see :mod:`sdb.diff._parallel`): DeepDiff is most of a large diff's time."""
    return field_changes(pairs, tolerance, deep=_deep_in_halves)


def _deep_in_halves(pairs: Sequence[tuple[Any, Any]], tolerance: Tolerance) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for part in in_halves(functools.partial(deep_changes, tolerance=tolerance), pairs):
        out += part
    return out


_PLAIN = (str, int, float, bool, type(None))
_DEEPER = 0.33  # DeepDiff's threshold_to_diff_deeper: below this share of keys in common, a whole change


def _change(key: str, old: Any, new: Any) -> dict[str, Any]:
    """A changed field as :func:`field_changes` names it from DeepDiff's path."""
    return {"path": f".{key}".lstrip(".") or "(arguments)", "old": old, "new": new}


def flat_changes(old: Any, new: Any) -> list[dict[str, Any]] | None:
    """The changed fields of two objects of plain values (text, numbers, booleans, null), as DeepDiff
    reports them without a tolerance (a value of another type is a change: 1 -> true, 1 -> 1.0; a key
    on one side only is a change from or to null), sorted by path; None when either is not such an
    object (DeepDiff then compares them). Most tool arguments are flat, and DeepDiff costs ~100 us a
    pair where this costs ~2."""
    if type(old) is not dict or type(new) is not dict or not old or not new:
        return None  # DeepDiff reports an empty object against another whole: left to it
    shared = old.keys() & new.keys()
    union = len(old) + len(new) - len(shared)
    if (union > 1 and len(shared) / union < _DEEPER) or any(
        not isinstance(k, str) or k.startswith("__") for k in old.keys() | new.keys()
    ):
        return None  # objects with few keys in common, reported whole; "__private" keys, skipped: DeepDiff's
    out = []
    for key, a in old.items():
        if type(a) not in _PLAIN:
            return None
        if key in new:
            b = new[key]
            if type(b) not in _PLAIN:
                return None
            if type(a) is not type(b) or a != b:
                out.append(_change(key, a, b))
        else:
            out.append(_change(key, a, None))
    for key, b in new.items():
        if key not in old:
            if type(b) not in _PLAIN:
                return None
            out.append(_change(key, None, b))
    return sorted(out, key=lambda c: c["path"])


def field_changes(
    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    tolerance: Tolerance,
    *,
    deep: Callable[[Sequence[tuple[Any, Any]], Tolerance], list[list[dict[str, Any]]]] | None = None,
) -> list[list[dict[str, Any]]]:
    """The fields that differ in each pair (``{path, old, new}``) under one tolerance: flat objects
    compared directly (:func:`flat_changes`, without a numeric tolerance), the rest by DeepDiff
    (``deep``, by default :func:`deep_changes`: one call)."""
    normalised = [(tolerance.normalise(a), tolerance.normalise(b)) for a, b in pairs]
    found: list[list[dict[str, Any]] | None] = [
        None if tolerance.numeric_tolerance else flat_changes(a, b) for a, b in normalised
    ]
    rest = [i for i, changes in enumerate(found) if changes is None]
    explained = (deep or deep_changes)([normalised[i] for i in rest], tolerance)
    for i, changes in zip(rest, explained, strict=True):
        found[i] = changes
    return [changes or [] for changes in found]


def deep_changes(pairs: Sequence[tuple[Any, Any]], tolerance: Tolerance) -> list[list[dict[str, Any]]]:
    """The fields that differ in each pair of normalised arguments, in a single DeepDiff call: the pairs
    become two dicts keyed by position, and each change is routed back by the first key of its path.
    DeepDiff's fixed cost per call dominates small argument dicts, so one call for all pairs is several
    times faster than one per pair."""
    if not pairs:
        return []
    old = {f"p{i}": a for i, (a, _) in enumerate(pairs)}
    new = {f"p{i}": b for i, (_, b) in enumerate(pairs)}
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
