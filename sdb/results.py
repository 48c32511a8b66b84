"""The one serialisation of the typed results (``DiffSummary``, ``ReplayResult``, ...): what ``--json``
prints, what a diff saves, what a report reads, all from the dataclass's own fields, so that no result
has a second, hand-written list of its keys that could drift from the first."""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

SKIP = "json_skip"  # field(metadata={SKIP: True}): kept in the object, left out of its JSON
OMIT_NONE = "json_omit_none"  # field(metadata={OMIT_NONE: True}): left out of its JSON while None


_ATOMS = frozenset({str, int, bool, type(None)})


@functools.cache
def _json_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """A dataclass's fields that its JSON holds, in declaration order, each with whether it is left
    out while None."""
    return tuple((f.name, bool(f.metadata.get(OMIT_NONE))) for f in dataclasses.fields(cls) if not f.metadata.get(SKIP))


def as_json(value: Any) -> Any:
    """``value`` as plain JSON data: a dataclass becomes a dict of its fields in declaration order
    (without those whose metadata sets :data:`SKIP`, nor, while they are None, those that set
    :data:`OMIT_NONE`: a key a result's JSON has only sometimes keeps that contract), tuples and sets
    lists, paths and enums strings, a non-finite float ``None`` (JSON has no NaN). The plain types
    are told by their exact type first: a large diff's summary holds ~10^5 of them."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    atoms = _ATOMS
    if kind is list or kind is tuple:
        return [v if type(v) in atoms else as_json(v) for v in value]
    if kind is dict:
        return {k if type(k) is str else str(k): v if type(v) in atoms else as_json(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for name, omit_none in _json_fields(kind):  # type: ignore[arg-type]  # a class is hashable
            v = getattr(value, name)
            if not (omit_none and v is None):
                out[name] = v if type(v) in atoms else as_json(v)
        return out
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(as_json(v) for v in value)
    if isinstance(value, enum.Enum):
        return as_json(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
