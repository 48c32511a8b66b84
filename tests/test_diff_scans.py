"""Scale (issue 22 item 6): the 100,000-session diff in <= 10 s. A run of that size is thousands of
Parquet parts, and every scan of the store's ``events`` view opens them all (most of a second each on
the load test's store): the diff reads the store once per kind of question (the llm marks and
provider errors; the session ids; the actions and effects; the terminal states; the payloads of the
mismatched actions), and a table of the first divergences makes objects of those it shows only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import sdbctl.sdb.diff._differ as differ
import sdbctl.sdb.diff._results as results
from sdbctl.sdb.diff import diff_runs
from sdbctl.sdb.store import Store
from tests.test_diff_scale import _step_mode

pytestmark = pytest.mark.usefixtures("machine_cache")  # this machine's cache: the test's own

_READS_STORE = re.compile(r"\bevents\b")


class _Counting:
    """A DuckDB connection that notes each statement reading the store's ``events`` view."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.scans: list[str] = []

    def _note(self, sql: str) -> None:
        if _READS_STORE.search(sql):
            self.scans.append(" ".join(sql.split()))

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._note(sql)
        return self._con.execute(sql, *args, **kwargs)

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._note(sql)
        return self._con.sql(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def test_a_step_diff_reads_the_store_once_per_kind_of_question(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thirteen scans of both runs (the workload check's and the summary's own, each staging table's)
    cost the load test's diff ten seconds: five remain, and the result is the same."""
    _step_mode(store)
    expected = diff_runs(Store.open(store), "base", "cand", save=False)
    made: list[_Counting] = []
    real = differ.connect  # type: ignore[attr-defined]

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(_Counting(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(differ, "connect", counting)
    result = diff_runs(Store.open(store), "base", "cand", save=False)
    assert len(made) == 1
    scans = made[0].scans
    assert len(scans) <= 5, "\n".join(scans)
    assert result.summary == expected.summary and result.summary.divergences > 30
    assert list(result.divergences) == list(expected.divergences)


def test_the_first_divergences_of_a_large_diff_are_the_only_ones_made_objects(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sdbctl diff`` shows the first few divergences: on the load test's diff, making all 54,126 of
    them objects to keep three took a second."""
    _step_mode(store)
    monkeypatch.setattr(results, "KEPT", 10)  # a "large" diff: beyond KEPT, read from its file
    result = diff_runs(Store.open(store), "base", "cand", save=False)
    n = len(result.divergences)
    layers = result.summary.layers
    expected = sorted(result.divergences, key=lambda d: (d.layer not in layers, d.after_first))
    made = 0
    real = results._divergence

    def counted(row: dict[str, Any], order: int) -> results.Divergence:
        nonlocal made
        made += 1
        return real(row, order)

    monkeypatch.setattr(results, "_divergence", counted)
    for k in (1, 3, n + 5):
        made = 0
        first = result.divergences.first(k, layers)
        assert first == expected[:k]
        assert made == min(k, n)
    in_order = sorted(result.divergences, key=lambda d: d.after_first)  # no layer gated: firsts first
    assert result.divergences.first(3, ()) == in_order[:3]
    assert n > 10
