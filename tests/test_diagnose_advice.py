"""``sdbctl diagnose``: advice only where its premise holds in the run. An imported run (no pattern
tags, no agent code) is advised from what it has (actions, fields, layers, outcome flips), never told
to read ``patterns show (none)`` or to use a P4 gate it does not have; every command it is told to run
runs; and an unknown run is the error every command gives."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from sdbctl.sdb.recording import Recorder
from tests.chat_runs import MAP, TRIALS, ok
from tests.conftest import CLI, assert_one_line_error

# what only a run recorded by agent code with the pattern library makes true
CODE_ONLY = ("(none)", "patterns show", "Literal[", "rounding=", "pure=True", "signature", "P1", "P3", "P4", "P5")


def _imported_pair(sdbctl: CLI) -> None:
    """Trial 0 (``a``) and trial 1 (``b``) of the airline conversations, imported and diffed."""
    ok(sdbctl("import", "chat", TRIALS[0], "--map", MAP, "--run-id", "a"))
    ok(sdbctl("import", "chat", TRIALS[1], "--map", MAP, "--run-id", "b"))
    ok(sdbctl("diff", "a", "b"))


def _findings(sdbctl: CLI, run: str) -> list[dict[str, Any]]:
    return list(json.loads(ok(sdbctl("diagnose", run, "--json")).stdout)["findings"])


def test_an_imported_run_is_advised_from_what_it_has_never_from_patterns_it_lacks(sdbctl: CLI) -> None:
    _imported_pair(sdbctl)
    findings = _findings(sdbctl, "b")
    for f in findings:
        for said in (f["evidence"], f["recommendation"]):
            assert not any(word in said for word in CODE_ONLY), said
    advice = {f["where"]: f["recommendation"] for f in findings}
    # outcome flips: sessions 2 and 4 failed; their first write divergence is named
    assert "book_reservation" in advice["outcomes"] and "cancel_reservation" in advice["outcomes"]
    # the changed field, with its values, and the config key that watches it
    cabin = advice["book_reservation.cabin"]
    assert "economy -> basic_economy" in cabin and "critical_actions" in cabin
    # the actions that appeared, by name
    assert "cancel_reservation" in advice["extra"] and "critical_actions" in advice["extra"]
    # a lookup counted as a write (no config declares it read-only): the key that makes it a read
    assert 'read_only = ["get_user_details"]' in advice["action get_user_details"]
    assert "speech_threshold" in advice["layer speech"]


def test_every_command_diagnose_suggests_runs_as_pasted(sdbctl: CLI) -> None:
    _imported_pair(sdbctl)
    text = ok(sdbctl("diagnose", "b")).stdout
    commands = [c for c in re.findall(r"`([^`]+)`", text) if c.startswith("sdbctl ")]
    assert commands, text
    for command in commands:
        ok(sdbctl(*shlex.split(command)[1:]))


def _priced(store: Path, run: str, price: float, pattern: str) -> None:
    """A run recorded with the SDK: one session whose model sets a price, its events tagged ``pattern``."""
    with Recorder(store=store, run_id=run) as rec:
        s = rec.session("s1", pattern=pattern)
        llm = s.llm({"messages": []}, {"choices": []}, model="m", step="quote")
        s.action("set_price", {"price": price, "currency": "EUR"}, step="quote", parent=llm)


@pytest.mark.parametrize("pattern", ["P4", "P5", ""])
def test_p4_advice_only_for_a_run_with_p4_events(sdbctl: CLI, store: Path, pattern: str) -> None:
    _priced(store, "base", 10.0, pattern)
    _priced(store, "cand", 12.5, pattern)
    ok(sdbctl("diff", "base", "cand"))
    findings = _findings(sdbctl, "cand")
    price = next(f for f in findings if f["where"] == "set_price.price")
    assert ("P4's policy gate" in price["recommendation"]) == (pattern == "P4")
    assert ("rounding=" in price["recommendation"]) == (pattern != "")  # code advice needs code
    tagged = [f for f in findings if f["where"].startswith("pattern")]
    assert [f["recommendation"] for f in tagged] == (
        [f"read `sdbctl patterns show {pattern}` for what a divergence means there"] if pattern else []
    )


def test_diagnose_of_an_unknown_run_is_the_error_every_command_gives(sdbctl: CLI) -> None:
    _imported_pair(sdbctl)
    for run in ("NOSUCH", "bb"):
        out = sdbctl("diagnose", run)
        assert_one_line_error(out, f"run {run!r} not found")
        assert out.stderr == sdbctl("show", run).stderr
    assert "did you mean 'b'?" in sdbctl("diagnose", "bb").stderr


def test_a_run_diffed_with_no_divergence_is_not_told_to_run_diff(sdbctl: CLI) -> None:
    _imported_pair(sdbctl)
    ok(sdbctl("replay", "a", "--model", "recorded", "--run-id", "again"))
    ok(sdbctl("diff", "a", "again"))
    out = ok(sdbctl("diagnose", "again"))
    assert "0 divergences" in out.stdout and "against a" in out.stdout and "sdbctl diff" not in out.stdout
    assert_one_line_error(sdbctl("diagnose", "a"), "no stored divergences", "sdbctl diff BASE a")
