"""The differ against the simulators' ground truth, its symmetry, alignment properties and tolerances."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sdbctl.fixtures.workloads
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.diff import DiffConfig, DiffSummary, Tolerance, align, align_by_name, diff_runs
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.results import as_json
from sdbctl.sdb.store import Store
from tests.conftest import CLI
from tests.helpers import ground_truth

sdbctl.fixtures.workloads.register_all()


def _expected_reasons(store: Path, run_id: str) -> dict[tuple[str, str], set[str]]:
    """(session, step) -> the reasons the simulator's ground truth implies for that step."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for t in ground_truth(store, run_id):
        if not t["changes"]:
            continue
        fields = {c["field"] for c in t["changes"]}
        reason = "parse_failed" if "(arguments)" in fields else "tool_changed" if "(tool)" in fields else "args_changed"
        out[(t["session_id"], t["step"])].add(reason)
    return out


@pytest.mark.parametrize(
    ("workload", "options", "versions"),
    [
        ("contract-renewal", {"spine": "p5"}, ["v2", "v3"]),
        ("contract-renewal", {"spine": "p3"}, ["v2", "v3"]),
        ("support-triage", {}, ["v2", "v3"]),
        ("research", {}, ["v2", "v3"]),
    ],
)
def test_divergences_equal_the_simulators_ground_truth(
    store: Path, workload: str, options: dict[str, str], versions: list[str]
) -> None:
    family = {"contract-renewal": "renewal", "support-triage": "triage", "research": "research"}[workload]
    record_workload(load_agent(workload), workload, sessions=80, store=str(store), run_id="base", options=options)
    for version in versions:
        run = f"cand-{version}"
        replay(Store.open(store), "base", ReplayOptions(model=f"sim:{family}@{version}", run_id=run))
        result = diff_runs(Store.open(store), "base", run)
        found: dict[tuple[str, str], set[str]] = defaultdict(set)
        for d in result.divergences:
            found[(d.session_id, d.step or "")].add(d.reason)
        truth = _expected_reasons(store, run)
        assert truth, f"{version} drifted nowhere: the test would prove nothing"
        assert set(found) == set(truth), version  # precision and recall 1.0 on the positions
        assert dict(found) == dict(truth), version  # and on the reasons


def test_a_run_against_itself_has_no_divergence(store: Path) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=30, store=str(store), run_id="a")
    result = diff_runs(Store.open(store), "a", "a")
    assert result.divergences == [] and result.summary.steps_compared > 0
    assert result.summary.step_divergence_rate == 0.0


def test_diff_is_symmetric_with_missing_and_extra_swapped(store: Path) -> None:
    record_workload(load_agent("research"), "research", sessions=60, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:research@v2", run_id="b2"))
    replay(Store.open(store), "base", ReplayOptions(model="sim:research@v3", run_id="b3"))
    ab = diff_runs(Store.open(store), "b2", "b3").summary
    ba = diff_runs(Store.open(store), "b3", "b2").summary
    assert ab.steps_diverged == ba.steps_diverged and ab.divergences == ba.divergences
    swap = {"missing": "extra", "extra": "missing"}
    assert {swap.get(k, k): v for k, v in ab.by_reason.items()} == ba.by_reason


def test_tolerances_hide_what_they_ignore(store: Path) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=60, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="v2"))
    strict = diff_runs(Store.open(store), "base", "v2")
    assert any(f["path"] == "discount_pct" for d in strict.divergences for f in d.fields)
    lenient = DiffConfig({"propose_offer": Tolerance(ignore=("discount_pct", "plan"))})
    assert diff_runs(Store.open(store), "base", "v2", lenient).divergences == []
    within = DiffConfig({"propose_offer": Tolerance(numeric_tolerance=5.0, ignore=("plan",))})
    assert diff_runs(Store.open(store), "base", "v2", within).divergences == []


digests = st.lists(st.integers(0, 6), max_size=12)


@given(digests, digests)
def test_alignment_covers_both_sides_exactly_once(base: list[int], candidate: list[int]) -> None:
    pairs = align(base, candidate)
    assert sorted(p.base for p in pairs if p.base is not None) == list(range(len(base)))
    assert sorted(p.candidate for p in pairs if p.candidate is not None) == list(range(len(candidate)))
    for p in pairs:
        if p.equal:
            assert p.base is not None and p.candidate is not None and base[p.base] == candidate[p.candidate]


@given(digests, digests)
def test_whole_session_alignment_covers_both_sides_once_in_order_and_keeps_every_match(
    base: list[int], candidate: list[int]
) -> None:
    names = [f"tool{d % 3}" for d in base], [f"tool{d % 3}" for d in candidate]
    pairs = align_by_name(base, names[0], candidate, names[1])
    assert sorted(p.base for p in pairs if p.base is not None) == list(range(len(base)))
    assert sorted(p.candidate for p in pairs if p.candidate is not None) == list(range(len(candidate)))
    assert [p.base for p in pairs if p.base is not None] == list(range(len(base)))  # in order on both sides
    assert [p.candidate for p in pairs if p.candidate is not None] == list(range(len(candidate)))
    assert sum(p.equal for p in pairs) == sum(p.equal for p in align(base, candidate))  # as many matches as the LCS
    for p in pairs:
        if p.equal:
            assert p.base is not None and p.candidate is not None and base[p.base] == candidate[p.candidate]


@given(digests, st.integers(0, 12), st.integers(7, 9))
def test_one_insertion_is_one_extra_and_one_deletion_one_missing(base: list[int], at: int, new: int) -> None:
    at = min(at, len(base))
    inserted = [*base[:at], new, *base[at:]]
    pairs = align(base, inserted)
    assert [p for p in pairs if p.base is None] == [p for p in pairs if not p.equal]
    assert sum(p.base is None for p in pairs) == 1
    deleted = align(inserted, base)
    assert sum(p.candidate is None for p in deleted) == 1 and sum(not p.equal for p in deleted) == 1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 1000), min_size=2, max_size=8, unique=True).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
def test_a_reordering_is_reported_as_reordered_and_nothing_else(pair: tuple[list[int], list[int]]) -> None:
    from sdbctl.recorders.sdk import Recorder

    base, cand = pair
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / ".sdb"
        for run_id, values in (("b", base), ("c", cand)):
            with Recorder(store=store, run_id=run_id) as rec:
                s = rec.session("s")
                llm = s.llm({"k": 0}, {}, model="m", step="step")
                for v in values:
                    s.action("a", {"v": v}, step="step", parent=llm)
        divs = diff_runs(Store.open(store), "b", "c", alignment="step", save=False).divergences
    moved = sum(b != c for b, c in zip(base, cand, strict=True))
    assert [d.reason for d in divs] == ["reordered"] * moved


def test_edge_cases_found_in_review(store: Path) -> None:
    from sdbctl.recorders.sdk import Recorder
    from sdbctl.sdb.errors import RunNotFound

    with Recorder(store=store, run_id="b") as rec:
        s = rec.session("s")
        for k in range(3):
            llm = s.llm({"k": k}, {}, model="m", step=f"st{k}")
            s.action("send", [1, k], step=f"st{k}", parent=llm)  # arguments need not be an object
    with Recorder(store=store, run_id="empty", meta={"source_run": "b"}) as rec:
        s = rec.session("s")
        for k in range(3):
            s.llm({"k": k}, {}, model="m", step=f"st{k}")
    with Recorder(store=store, run_id="lists", meta={"source_run": "b"}) as rec:
        s = rec.session("s")
        for k in range(3):
            llm = s.llm({"k": k}, {}, model="m", step=f"st{k}")
            s.action("send", [1, k + (k == 2)], step=f"st{k}", parent=llm)
    empty = diff_runs(Store.open(store), "b", "empty")
    assert [d.reason for d in empty.divergences] == ["missing"] * 3  # no actions at all is not "no divergence"
    lists = diff_runs(Store.open(store), "b", "lists")
    assert [(d.step, d.fields) for d in lists.divergences] == [("st2", [{"path": "[1]", "old": 2, "new": 3}])]
    with pytest.raises(RunNotFound):
        diff_runs(Store.open(store), "nope", "lists")


def test_session_mode_repeats_are_repeats_not_extra_sessions(store: Path) -> None:
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=15, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="recorded", mode="session", repeat=2, run_id="rep"))
    result = diff_runs(Store.open(store), "base", "rep")
    s = result.summary
    assert result.divergences == [] and s.repeats == 2 and s.pass_k == 1.0
    assert s.drift is not None and s.drift.source == "2 repeats of the candidate"
    assert s.steps_diverged <= s.steps_compared


def test_the_json_and_the_saved_diff_are_the_summary_as_json(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=20, store=str(store), run_id="base")
    opts = ReplayOptions(model="sim:renewal@v3?noise=0.05", mode="session", repeat=2, run_id="v3")
    replay(Store.open(store), "base", opts)
    summary = diff_runs(Store.open(store), "base", "v3").summary
    expected = as_json(summary)
    nested = (summary.drift, summary.outcomes, summary.first_divergence, summary.terminal_changes)
    assert all(nested)  # every nested part is filled in
    printed = json.loads(sdbctl("diff", "base", "v3", "--json").stdout)["summary"]
    saved = json.loads((store / "diffs" / "base..v3" / "summary.json").read_text())
    assert list(printed) == list(saved) == list(expected)  # the same keys, in the same order
    assert printed == saved == expected
    assert DiffSummary.from_json(saved) == summary  # and a saved diff reads back as it was
