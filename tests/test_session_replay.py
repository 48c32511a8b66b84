"""Closed-loop replay at the first action with no recorded effect: stop (default), or go on through
handlers marked ``pure``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store, connect, run_query

AGENT = textwrap.dedent(
    """
    from pathlib import Path
    from sdbctl.sdb.agents import SessionItem
    from sdbctl.sdb.boundary import Boundary
    from sdbctl.sdb.prompts import PromptLibrary

    CALLS = []

    def boundary():
        b = Boundary("tiny")

        @b.action(pure=True)
        def lookup(q: str) -> dict:
            CALLS.append(q)
            return {"found": q.upper()}

        @b.action
        def send(x: int) -> dict:
            return {"sent": x}

        return b

    class Tiny:
        name = "tiny"
        description = "two steps: a pure lookup, then a send"
        baseline_model = "py:tiny_models:first"
        patterns = ("P4",)
        prompts = PromptLibrary(Path(__file__).parent / "prompts")

        def options(self, given):
            return {}

        def sessions(self, n, seed, options):
            return [SessionItem(f"s{i}", i) for i in range(n or 3)]

        def replay_boundary(self):
            return boundary()

        async def run_session(self, ctx, item):
            b = boundary()
            first = await ctx.decide(b, "ask@v1", {"i": item.data}, tools=["lookup"], step="lookup")
            second = await ctx.decide(b, "ask@v1", {"i": item.data}, tools=["send"], step="send")
            return "done" if first.committed and second.committed else "stuck"

    workload = Tiny()
    """
)
MODELS = textwrap.dedent(
    """
    import json

    def _call(name, args):
        return {"choices": [{"message": {"tool_calls": [
            {"id": "c", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}}]}

    def _tool(request):
        return request["tools"][0]["function"]["name"]

    def first(request):
        return _call("lookup", {"q": "a"}) if _tool(request) == "lookup" else _call("send", {"x": 1})

    def second(request):  # another answer to the pure lookup, the same send
        return _call("lookup", {"q": "b"}) if _tool(request) == "lookup" else _call("send", {"x": 1})
    """
)


def test_stop_at_the_first_unrecorded_effect_or_continue_through_pure_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ask@v1.txt").write_text("## user\nitem: {i}\n")
    (tmp_path / "tiny_agent.py").write_text(AGENT)
    (tmp_path / "tiny_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / ".sdb"
    ref = f"{tmp_path / 'tiny_agent.py'}:workload"
    record_workload(load_agent(ref), ref, sessions=3, store=str(store), run_id="base")
    stopped = replay(
        Store.open(store),
        "base",
        ReplayOptions(model="py:tiny_models:second", mode="session", run_id="stop", agent=ref),
    )
    assert stopped.stopped_sessions == 3
    reasons = run_query(
        connect(Store.open(store), "stop"), "SELECT payload FROM events WHERE kind = 'gate' AND name = 'replay'"
    )[1]
    assert len(reasons) == 3 and all("no recorded effect for lookup" in r[0] for r in reasons)
    assert [(s.session_id, s.status, s.divergences, s.steps) for s in stopped.sessions] == [
        (f"s{i}", "stopped", 1, 1) for i in range(3)
    ]  # each stopped at its first step, the lookup it answered otherwise
    assert all("no recorded effect for lookup" in (s.reason or "") for s in stopped.sessions)
    went_on = replay(
        Store.open(store),
        "base",
        ReplayOptions(
            model="py:tiny_models:second", mode="session", on_divergence="continue", run_id="cont", agent=ref
        ),  # the agent is a path: named by the caller, never taken from the manifest
    )
    assert went_on.stopped_sessions == 0
    assert [(s.status, s.divergences, s.steps) for s in went_on.sessions] == [("complete", 1, 2)] * 3
    con = connect(Store.open(store), "cont")
    effects = run_query(con, "SELECT name, payload FROM events WHERE kind = 'effect' ORDER BY session_id, seq")[1]
    assert [n for n, _ in effects] == ["lookup", "send"] * 3
    assert all('"found":"B"' in p for n, p in effects if n == "lookup")  # the pure handler ran again
    assert all('"sent":1' in p for n, p in effects if n == "send")  # the identical send was served
