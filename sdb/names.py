"""Names a user types — a kind, a layer, a run id, a model spec — checked against the ones that exist,
with the closest as a suggestion when a typo is near one (edit distance 2 or less)."""

from __future__ import annotations

from collections.abc import Iterable

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from sdbctl.sdb.errors import UsageError


def closest(word: str, choices: Iterable[str], max_distance: int = 2) -> str | None:
    """The choice nearest ``word`` by Levenshtein distance, if within ``max_distance``."""
    found = process.extractOne(word, list(choices), scorer=Levenshtein.distance, score_cutoff=max_distance)
    return str(found[0]) if found is not None else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for a near miss, else empty."""
    near = closest(word, choices)
    return f"; did you mean {near!r}?" if near is not None and near != word else ""


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    """``value`` when it is one of ``choices``, else a one-line :class:`UsageError` naming them all."""
    options = list(choices)
    if value in options:
        return value
    raise UsageError(f"{what} {value!r} is not one of {', '.join(options)}{did_you_mean(value, options)}")
