"""Aligning two sequences of actions: which pairs correspond, which are missing, extra, or reordered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher


@dataclass(frozen=True)
class Pair:
    """One alignment position: indexes into base and candidate (None where one side has nothing)."""

    base: int | None
    candidate: int | None
    equal: bool


def align(base: Sequence[int], candidate: Sequence[int]) -> list[Pair]:
    """Align two digest sequences: equal runs pair up, replaced runs pair position by position, the
    rest is missing (base only) or extra (candidate only)."""
    pairs: list[Pair] = []
    matcher = SequenceMatcher(a=list(base), b=list(candidate), autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs += [Pair(i1 + k, j1 + k, True) for k in range(i2 - i1)]
        elif op == "replace":
            n = max(i2 - i1, j2 - j1)
            for k in range(n):
                b = i1 + k if i1 + k < i2 else None
                c = j1 + k if j1 + k < j2 else None
                pairs.append(Pair(b, c, False))
        elif op == "delete":
            pairs += [Pair(i, None, False) for i in range(i1, i2)]
        else:
            pairs += [Pair(None, j, False) for j in range(j1, j2)]
    return pairs


def reordered(base: Sequence[int], candidate: Sequence[int]) -> bool:
    """The same actions in another order."""
    return list(base) != list(candidate) and Counter(base) == Counter(candidate)
