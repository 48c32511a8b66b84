"""Hostile input, from a security review: each case once crashed with a traceback, or changed a value
silently. Now each is refused — one line naming the file and line, or the option, exit code 2, and no
run written — or, for a recording in process, a PayloadError in the caller that takes no seq. The
importers' cases are ``test_hostile_imports.py``."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdbctl.fixtures.sample_run import record_sample
from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.errors import PayloadError, SdbError, UsageError
from sdbctl.sdb.events import canonical_bytes, canonical_json
from sdbctl.sdb.gate import load_thresholds
from sdbctl.sdb.replay import ReplayOptions
from sdbctl.sdb.store import Store, connect, query_arrow
from tests.conftest import CLI, assert_one_line_error

# -- 2: the in-process recorder --------------------------------------------------------------------

REFUSED: list[tuple[Any, str]] = [
    (float("nan"), "nan is not a JSON number"),
    (float("inf"), "inf is not a JSON number"),
    ({"deep": [{"x": float("-inf")}], "n": None}, "-inf is not a JSON number"),
    (np.array([1.5, np.nan]), "nan is not a JSON number"),
    ({"d": decimal.Decimal("NaN")}, "nan is not a JSON number"),
    ({1: "a", "1": "b"}, "keys 1 and '1' are both written as '1'"),
    ({"k": [{True: 1, "true": 2}]}, "keys True and 'true' are both written as 'true'"),
]
REFUSED_IDS = ["nan", "infinity", "nested-minus-infinity", "numpy-nan", "decimal-nan", "1-and-'1'", "True-and-'true'"]


@pytest.mark.parametrize(("value", "reason"), REFUSED, ids=REFUSED_IDS)
def test_canonical_json_refuses_nan_infinities_and_keys_written_as_one_text(value: Any, reason: str) -> None:
    with pytest.raises(PayloadError, match="not JSON-serialisable") as error:
        canonical_bytes(value)
    assert reason in str(error.value)


def test_canonical_json_still_writes_non_string_keys_nulls_and_the_text_null() -> None:
    assert canonical_json({1: "a", "b": None, 2.5: 1.0}) == '{"1":"a","2.5":1,"b":null}'
    assert canonical_json({"text": "null", "n": None}) == '{"n":null,"text":"null"}'


def _methods(s: Any, value: Any) -> list[Callable[[], int]]:
    """Every recording method with ``value`` in its payload."""
    return [
        partial(s.action, "propose_offer", value),
        partial(s.action, "propose_offer", {"a": 1}, call_id="c", error=value),
        partial(s.input, "contract", value),
        partial(s.state, "offer_sent", value),
        partial(s.effect, "send", value),
        partial(s.gate, "policy", value),
        partial(s.gate, "policy", "allow", value),
        partial(s.llm, {"q": 1}, {"choices": [value]}, model="m"),
        partial(s.llm, {"q": value}, {}, model="m"),
        partial(s.llm, {"q": 1}, {}, model="m", variables={"v": value}),
        partial(s.error, "provider", "timeout", detail=value),
    ]


@pytest.mark.parametrize(("value", "reason"), REFUSED, ids=REFUSED_IDS)
def test_recorder_refuses_nan_infinities_and_clashing_keys_in_the_caller_without_a_seq(
    store: Path, value: Any, reason: str
) -> None:
    with Recorder(store=store, run_id="r", handle_signals=False) as rec:
        s = rec.session("s")
        assert s.state("before", {"a": 1}) == 0
        for call in _methods(s, value):
            with pytest.raises(PayloadError) as error:
                call()
            assert reason in str(error.value)
        assert s.state("after", {"a": 2}) == 1  # no seq was taken by a refused call
    rows = query_arrow(connect(Store.open(store), "r"), "SELECT seq, name, payload FROM events ORDER BY seq")
    assert rows.to_pylist() == [
        {"seq": 0, "name": "before", "payload": '{"a":1}'},
        {"seq": 1, "name": "after", "payload": '{"a":2}'},
    ]


@pytest.mark.parametrize("name", [5, "n\ud800"], ids=["not-a-string", "lone-surrogate"])
def test_recorder_refuses_a_name_that_is_not_utf8_text_as_a_payload_error(store: Path, name: Any) -> None:
    """Once a TypeError (C), an AttributeError or a UnicodeEncodeError (Python), from the digest."""
    with Recorder(store=store, handle_signals=False) as rec:
        s = rec.session("s")
        calls: list[Callable[[], Any]] = [
            lambda: s.input(name, {}),
            lambda: s.state(name, {}),
            lambda: s.gate(name, True),
            lambda: s.effect(name, {}),
            lambda: s.llm({}, {}, model="m", name=name),
            lambda: s.error(name, "timeout"),
        ]
        for call in calls:
            with pytest.raises(PayloadError, match="name"):
                call()
        assert s.state("after", {}) == 0


# -- 3: a garbage manifest in one run --------------------------------------------------------------


def test_a_garbage_manifest_leaves_its_run_out_with_a_warning_and_the_others_work(sdbctl: CLI, tmp_path: Path) -> None:
    record_sample(str(tmp_path / ".sdb"), 3, run_id="a")
    record_sample(str(tmp_path / ".sdb"), 3, run_id="b")
    (tmp_path / ".sdb" / "runs" / "x").mkdir()
    (tmp_path / ".sdb" / "runs" / "x" / "run.json").write_text("garbage\n")
    listed = sdbctl("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("a", "complete"),
        ("b", "complete"),
        ("x", "damaged"),  # listed as what it is (issue 20): its file is the newest
    ]
    warning = listed.stderr.strip().splitlines()
    assert len(warning) == 1 and "x/run.json" in warning[0] and "warning" in warning[0], listed.stderr
    counted = sdbctl("query", "SELECT count(DISTINCT run_id) AS n FROM events", "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == [{"n": 2}] and "x/run.json" in counted.stderr
    diffed = sdbctl("diff", "a", "b", "--json")
    assert diffed.returncode == 0, diffed.stderr
    assert json.loads(diffed.stdout)["divergences"] == []
    assert sdbctl("show", "b", "--json").returncode == 0
    # @latest names the newest run, x: its error, never an older run in its place (tests/test_damaged_store.py)
    assert_one_line_error(sdbctl("show", "@latest"), "x/run.json", "damaged")
    assert_one_line_error(sdbctl("show", "x"), "x/run.json", "not a valid run manifest")  # asked for by id: its error


# -- 4: query --json of what orjson cannot write as it is ------------------------------------------


def test_query_prints_128_bit_integers_as_json_numbers_and_maps_keyed_by_text(sdbctl: CLI, sample_run: str) -> None:
    big = 170141183460469231731687303715884105727
    out = sdbctl("query", f"SELECT {big}::HUGEINT AS x", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"x": big}]
    sql = f"SELECT MAP {{1: 'a'}} AS m, MAP {{1.5: 2}} AS d, [{big}::HUGEINT] AS l, {{'h': {big}::HUGEINT}} AS s"
    out = sdbctl("query", sql, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"m": {"1": "a"}, "d": {"1.5": 2}, "l": [big], "s": {"h": big}}]
    for fmt in ("--csv", "--limit=5"):  # the CSV and the table cells
        out = sdbctl("query", sql, fmt)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert '{"1":"a"}' in out.stdout.replace('""', '"') and str(big) in out.stdout


# -- 5: option values no command can mean ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("diff", "a", "b", "--resamples", "-1"),
        ("diff", "a", "b", "--resamples", "0"),
        ("replay", "a", "--model", "recorded", "--timeout", "-1"),
        ("replay", "a", "--model", "recorded", "--timeout", "nan"),
        ("replay", "a", "--model", "recorded", "--timeout", "inf"),
        ("replay", "a", "--model", "recorded", "--rpm", "-5"),
        ("replay", "a", "--model", "recorded", "--rpm", "nan"),
        ("replay", "a", "--model", "recorded", "--retries", "-1"),
        ("replay", "a", "--model", "recorded", "--concurrency", "0"),
        ("replay", "a", "--model", "recorded", "--repeat", "0"),
        ("gate", "b", "--base", "a", "--max-step-divergence", "nan"),
        ("gate", "b", "--base", "a", "--max-step-divergence", "inf"),
        ("gate", "b", "--base", "a", "--max-step-divergence", "-1"),
        ("gate", "b", "--base", "a", "--max-error-rate", "nan"),
        ("gate", "b", "--base", "a", "--max-negative-flips", "-inf"),
    ],
    ids=lambda a: " ".join(a[-2:]),
)
def test_a_negative_or_nan_option_value_is_refused_naming_the_option(sdbctl: CLI, tmp_path: Path, args: Any) -> None:
    record_sample(str(tmp_path / ".sdb"), 2, run_id="a")
    record_sample(str(tmp_path / ".sdb"), 2, run_id="b")
    assert_one_line_error(sdbctl(*args), args[-2], "must be")
    assert sorted(p.name for p in (tmp_path / ".sdb" / "runs").iterdir()) == ["a", "b"]  # no replay was started


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"timeout": 0},
        {"rpm": -5.0},
        {"rpm": float("nan")},
        {"rpm": float("inf")},
        {"retries": -1},
        {"concurrency": 0},
        {"repeat": 0},
        {"repeat": 1.5},
        {"concurrency": True},
    ],
    ids=str,
)
def test_replay_options_built_from_python_refuse_the_same_values(bad: dict[str, Any]) -> None:
    """The Ray executor and --resume build them from saved options, with no CLI in between."""
    (name,) = bad
    with pytest.raises(UsageError, match=f"--{name} must be"):
        ReplayOptions(model="recorded", **bad)
    assert ReplayOptions(model="recorded", rpm=30, timeout=5, retries=0).retries == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_gate_thresholds_from_a_config_file_refuse_nan_and_infinity(tmp_path: Path, value: str) -> None:
    (tmp_path / "sdbctl.toml").write_text(f"[gate]\nmax_step_divergence = {value}\n")
    with pytest.raises(SdbError, match=r"sdbctl.toml: gate threshold max_step_divergence must be a number >= 0"):
        load_thresholds(tmp_path)
    with pytest.raises(SdbError, match=r"^--max-session-divergence must be a number >= 0 .*finite"):
        load_thresholds(tmp_path / "none", {"max_session_divergence": float(value)})
