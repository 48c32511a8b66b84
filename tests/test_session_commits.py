"""A session's verdict depends on that session only (issue 20, item 6): whether an action committed is
read from the session's own effects, never from the other sessions of the run; the config can say an
action needs an effect; the attempts that did not commit are counted per layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdbctl.recorders.sdk import Recorder
from tests.conftest import CLI, assert_one_line_error

READS = '[diff]\nread_only = ["get_*"]\n'


def _call(
    s: Any, step: str, name: str, args: dict[str, Any], effect: str | None = "ok", *, raised: bool = False
) -> None:
    """One model call proposing one tool call; its effect with status ``effect`` (None: no effect
    recorded), or, ``raised``, the handler's error instead."""
    llm = s.llm({"messages": [{"role": "user", "content": step}]}, {"choices": []}, model="m", step=step)
    act = s.action(name, args, step=step, parent=llm, call_id=f"c-{step}")
    if raised:
        s.error(name, "RuntimeError: seat map locked", parent=act, step=step)
    elif effect is not None:
        s.effect(name, {"content": "done" if effect == "ok" else "Error: no"}, parent=act, step=step, status=effect)


def _s(rec: Any, flight: str) -> None:
    """Session S: a lookup, then a booking whose result was never recorded (the log ends there)."""
    s = rec.session("S")
    _call(s, "call-001", "get_flight", {"flight": flight})
    _call(s, "call-002", "book_reservation", {"flight": flight, "cabin": "economy"}, effect=None)


def _t(rec: Any) -> None:
    """Session T: a booking with its (successful) result."""
    s = rec.session("T")
    _call(s, "call-001", "book_reservation", {"flight": "HAT2", "cabin": "business"})


def _diff(sdbctl: CLI, base: str, cand: str) -> dict[str, Any]:
    out = sdbctl("diff", base, cand, "--json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _of(result: dict[str, Any], session: str) -> list[dict[str, Any]]:
    drop = {"base_run", "candidate_run"}
    return [{k: v for k, v in d.items() if k not in drop} for d in result["divergences"] if d["session_id"] == session]


def test_a_session_gives_the_same_divergences_alone_or_among_others(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    with Recorder(store=store, run_id="alone") as rec:
        _s(rec, "HAT1")
    with Recorder(store=store, run_id="among") as rec:
        _s(rec, "HAT1")
        _t(rec)
    with Recorder(store=store, run_id="cand") as rec:
        _s(rec, "HAT9")
        _t(rec)
    alone, among = _diff(sdbctl, "alone", "cand"), _diff(sdbctl, "among", "cand")
    found = _of(alone, "S")
    assert found == _of(among, "S")
    # the booking with no effect committed on both sides (S records no effect of book_reservation at
    # all): one changed argument, not a booking that vanished because T's booking had an effect
    books = [d for d in found if d["action"]["base"] == "book_reservation"]
    assert [(d["reason"], d["fields"][0]["path"]) for d in books] == [("args_changed", "flight")]


def test_an_action_with_no_effect_in_a_session_that_records_that_actions_effects_did_not_run(
    sdbctl: CLI, tmp_path: Path
) -> None:
    store = tmp_path / ".sdb"
    for run, flight in (("base", "HAT1"), ("cand", "HAT9")):
        with Recorder(store=store, run_id=run) as rec:
            s = rec.session("S")
            _call(s, "call-001", "book_reservation", {"flight": "HAT0"})  # booked, with its result
            _call(s, "call-002", "book_reservation", {"flight": flight}, effect=None)  # no result: did not run
            _call(s, "call-003", "cancel_reservation", {"id": flight}, effect="error")  # failed
            _call(s, "call-004", "refund", {"id": flight}, raised=True)  # the handler raised
    result = _diff(sdbctl, "base", "cand")
    s = result["summary"]
    assert result["divergences"] == [] and s["steps_compared"] == 1  # only the first booking committed
    assert s["attempts"] == {"base": {"failed": 3}, "candidate": {"failed": 3}}


def test_the_config_says_which_actions_need_an_effect(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    for run in ("alone", "cand"):
        with Recorder(store=store, run_id=run) as rec:
            _s(rec, "HAT1" if run == "alone" else "HAT9")
    assert [d["reason"] for d in _diff(sdbctl, "alone", "cand")["divergences"]] == ["args_changed"] * 2
    (tmp_path / "sdbctl.toml").write_text('[diff]\nneeds_effect = ["book_*"]\n')
    result = _diff(sdbctl, "alone", "cand")  # a booking with no result did not happen
    assert [d["action"]["base"] for d in result["divergences"]] == ["get_flight"]
    assert result["summary"]["attempts"]["candidate"] == {"failed": 1}
    for bad in ('needs_effect = "book_*"', "needs_effect = [5]"):
        (tmp_path / "sdbctl.toml").write_text(f"[diff]\n{bad}\n")
        assert_one_line_error(sdbctl("diff", "alone", "cand"), "sdbctl.toml", "needs_effect")


def test_attempts_not_committed_are_counted_per_layer(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    for run in ("base", "cand"):
        with Recorder(store=store, run_id=run) as rec:
            s = rec.session("S")
            if run == "cand":
                _call(s, "call-000", "get_flight", {"flight": "HAT1"}, effect="error")  # a failed read
                _call(s, "call-001", "get_flight", {"flight": "HAT2"}, effect="error")  # and another
            _call(s, "call-002", "get_flight", {"flight": "HAT1"})
            _call(s, "call-003", "book_reservation", {"flight": "HAT1"}, effect="error" if run == "cand" else "ok")
    (tmp_path / "sdbctl.toml").write_text(READS)
    s = _diff(sdbctl, "base", "cand")["summary"]
    assert s["attempts"] == {"base": {}, "candidate": {"failed": 1}}  # the headline layers: the write
    assert s["by_layer"]["write"]["attempts"] == {"base": {}, "candidate": {"failed": 1}}
    assert s["by_layer"]["read"]["attempts"] == {"base": {}, "candidate": {"failed": 2}}
    both = json.loads(sdbctl("diff", "base", "cand", "--json", "--layers", "write,read").stdout)["summary"]
    assert both["attempts"]["candidate"] == {"failed": 3}
    text = sdbctl("diff", "base", "cand").stdout
    assert "attempts not committed: write (candidate failed 1), read (candidate failed 2)" in " ".join(text.split())
