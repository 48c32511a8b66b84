"""A step replay's memory does not grow with the number of sessions it replays: the sessions a batch
of source steps finished are let go, with the requests kept to store each one's next call as a delta."""

from __future__ import annotations

from typing import Any

import pytest

import sdbctl.fixtures.workloads
from sdbctl.sdb.events import _linear
from sdbctl.sdb.replay import _step
from tests.conftest import CLI

sdbctl.fixtures.workloads.register_all()


def test_a_step_replay_lets_go_of_the_sessions_it_finished(sdbctl: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdbctl("record", "contract-renewal", "-n", "12", "--run-id", "base").returncode == 0
    live: set[int] = set()  # the chains made during the replay (one of an earlier test may die in it)
    most = 0
    init = _linear.RequestChain.__init__

    def counted(self: Any) -> None:
        nonlocal most
        init(self)
        live.add(id(self))
        most = max(most, len(live))

    def gone(self: Any) -> None:
        live.discard(id(self))

    monkeypatch.setattr(_linear.RequestChain, "__init__", counted)
    monkeypatch.setattr(_linear.RequestChain, "__del__", gone, raising=False)
    monkeypatch.setattr(_step, "STEP_BATCH", 4)  # a few steps a batch: sessions end batch after batch
    out = sdbctl("replay", "base", "-m", "sim:renewal@v2", "--no-cache", "--run-id", "cand", "--json")
    assert out.returncode == 0, out.stderr
    # one chain per session alive at a time would be 12: a batch of 4 steps spans at most 4 sessions,
    # and the last session of a batch is kept for the next
    assert 0 < most <= 5, most
