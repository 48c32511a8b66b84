"""Aligning two sequences of actions: which pairs correspond, which are missing, extra, or reordered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import NamedTuple


class Pair(NamedTuple):
    """One alignment position: indexes into base and candidate (None where one side has nothing).
    A named tuple: a long session makes one per action, and a frozen dataclass costs 3x to build."""

    base: int | None
    candidate: int | None
    equal: bool


# Above this many cells the exact table costs more than it is worth; difflib's heuristic takes over
_EXACT_CELLS = 250_000


def _matches(base: Sequence[int], candidate: Sequence[int]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence. Equal heads and tails are matched first (they
    always lie on a longest path, and most sessions differ in a few places); the middle is exact (a
    dynamic-programming table) for the short sequences of a session or a step: difflib's
    longest-block-first matching is not minimal when digests repeat ([0, 7, 0, 0] against [0, 0, 0]
    gave two missing and one extra instead of one missing)."""
    n, m = len(base), len(candidate)
    head = 0
    while head < n and head < m and base[head] == candidate[head]:
        head += 1
    tail = 0
    while tail < n - head and tail < m - head and base[n - 1 - tail] == candidate[m - 1 - tail]:
        tail += 1
    found = [(k, k) for k in range(head)]
    found += [(head + i, head + j) for i, j in _middle(base[head : n - tail], candidate[head : m - tail])]
    found += [(n - tail + k, m - tail + k) for k in range(tail)]
    return found


def _middle(base: Sequence[int], candidate: Sequence[int]) -> list[tuple[int, int]]:
    n, m = len(base), len(candidate)
    if not n or not m:
        return []
    if n * m > _EXACT_CELLS:
        blocks = SequenceMatcher(a=list(base), b=list(candidate), autojunk=False).get_matching_blocks()
        return [(blk.a + k, blk.b + k) for blk in blocks for k in range(blk.size)]
    table = [[0] * (m + 1) for _ in range(n + 1)]  # table[i][j]: LCS length of base[i:], candidate[j:]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if base[i] == candidate[j] else max(below[j], row[j + 1])
    found: list[tuple[int, int]] = []
    i = j = 0
    while i < n and j < m:
        if base[i] == candidate[j]:  # equal heads always lie on a longest path
            found.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return found


def align(base: Sequence[int], candidate: Sequence[int]) -> list[Pair]:
    """Align two digest sequences on a longest common subsequence: matched actions pair up as equal;
    between two matches, the unmatched ones pair position by position (a replacement), and the rest
    is missing (base only) or extra (candidate only)."""
    pairs: list[Pair] = []
    i = j = 0
    for mi, mj in [*_matches(base, candidate), (len(base), len(candidate))]:
        for k in range(max(mi - i, mj - j)):
            pairs.append(Pair(i + k if i + k < mi else None, j + k if j + k < mj else None, False))
        if mi < len(base) and mj < len(candidate):
            pairs.append(Pair(mi, mj, True))
        i, j = mi + 1, mj + 1
    return pairs


def reordered(base: Sequence[int], candidate: Sequence[int]) -> bool:
    """The same actions in another order."""
    return len(base) == len(candidate) and list(base) != list(candidate) and Counter(base) == Counter(candidate)


def align_by_name(
    base: Sequence[int], base_names: Sequence[str], candidate: Sequence[int], cand_names: Sequence[str]
) -> list[Pair]:
    """Align a whole session's actions: a longest common subsequence of digests first (identical
    actions pair up, so one inserted lookup or one retried call shifts nothing after it); in each gap
    between two matches, actions of the same name pair in order (a changed argument stays one
    ``args_changed``, not a ``missing`` plus an ``extra``); what is left pairs position by position."""
    pairs: list[Pair] = []
    i = j = 0
    for mi, mj in [*_matches(base, candidate), (len(base), len(candidate))]:
        if mi > i or mj > j:  # a gap before this match
            _gap(pairs, list(range(i, mi)), list(range(j, mj)), base_names, cand_names)
        if mi < len(base) and mj < len(candidate):
            pairs.append(Pair(mi, mj, True))
        i, j = mi + 1, mj + 1
    return pairs


def _gap(
    pairs: list[Pair], gap_b: list[int], gap_c: list[int], base_names: Sequence[str], cand_names: Sequence[str]
) -> None:
    """Pair the unmatched actions between two matches: same names in order, the rest by position."""
    nb, nc = len(gap_b), len(gap_c)
    if not nb or not nc or (nb == 1 and nc == 1):  # nothing to choose between
        pairs += [Pair(gap_b[k] if k < nb else None, gap_c[k] if k < nc else None, False) for k in range(max(nb, nc))]
        return
    names = _matches([hash(base_names[x]) for x in gap_b], [hash(cand_names[y]) for y in gap_c])
    pi = pj = 0
    for ni, nj in [*names, (nb, nc)]:
        for k in range(max(ni - pi, nj - pj)):
            pairs.append(Pair(gap_b[pi + k] if pi + k < ni else None, gap_c[pj + k] if pj + k < nj else None, False))
        if ni < nb and nj < nc:
            pairs.append(Pair(gap_b[ni], gap_c[nj], False))
        pi, pj = ni + 1, nj + 1
