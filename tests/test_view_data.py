"""What ``sdbctl view`` shows (sdb.view._data.ViewData), over real recorded runs with known differences:
the severity order, the filters and pages of the session list, one session aligned as the differ aligned
it (a gap where an action is missing, the changed field paths, a word diff of speech), and one model
call's whole request, rebuilt from linear storage as ``sdbctl show --full`` prints it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.diff import DiffConfig, diff_runs
from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store
from sdbctl.sdb.view._data import ViewData
from tests.conftest import CLI
from tests.helpers import record_run

sdbctl.fixtures.workloads.register_all()

CONFIG = DiffConfig(read_only=("get_*",))
TOOLS = [
    {"type": "function", "function": {"name": n}} for n in ("get_reservation", "update_flight", "cancel_insurance")
]
FLIGHT = "HAT170"


class Conversation:
    """One recorded session whose model requests grow turn by turn (stored as deltas: linear storage)."""

    def __init__(self, s: Any) -> None:
        self.s = s
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": "You are an airline agent."}]

    def call(self, step: str, name: str, args: dict[str, Any], *, result: Any = "ok") -> None:
        self.messages.append({"role": "user", "content": f"{step}: please {name}"})
        request = {"messages": list(self.messages), "tools": TOOLS}
        llm = self.s.llm(request, {"choices": [{"tool": name}]}, model="m", step=step, tokens_in=7, tokens_out=3)
        act = self.s.action(name, args, step=step, parent=llm, call_id=f"c-{step}")
        self.s.effect(name, {"content": result}, parent=act)
        self.messages.append({"role": "assistant", "content": f"called {name}"})

    def say(self, step: str, text: str) -> None:
        self.messages.append({"role": "user", "content": f"{step}: tell me"})
        llm = self.s.llm({"messages": list(self.messages), "tools": TOOLS}, {"choices": []}, model="m", step=step)
        self.s.action("message", {"content": text}, step=step, parent=llm)


def _session(
    rec: Recorder,
    sid: str,
    k: int,
    *,
    flight: str = FLIGHT,
    update: bool = True,
    text: str | None = None,
    seat: str = "",
    passed: bool = True,
) -> None:
    c = Conversation(rec.session(sid))
    c.call("call-001", "get_reservation", {"id": f"R{k}"})
    if update:
        c.call("call-002", "update_flight", {"id": f"R{k}", "flight": flight})
    c.call("call-003", "cancel_insurance", {"id": f"R{k}"})
    c.call("call-004", "cancel_seat", {"id": f"R{k}{seat}"})
    c.say("call-005", text if text is not None else f"Your reservation R{k} is now on flight {FLIGHT}.")
    c.s.state("outcome", {"value": 1.0 if passed else 0.0})


SESSIONS = 8  # task-0 .. task-7


def _record(store: Path) -> None:
    """base: every session the same five turns; cand: task-5 changes a flight and fails (pass->fail),
    task-2 lacks its update (missing, the rest still paired), task-3 changes its flight and still
    passes, task-1 changes a later write (cancel_seat), task-6 answers in other words (speech); the
    rest are equal."""
    with Recorder(store=store, run_id="base") as rec:
        for k in range(SESSIONS):
            _session(rec, f"task-{k}", k)
    with Recorder(store=store, run_id="cand") as rec:
        for k in range(SESSIONS):
            sid = f"task-{k}"
            if k == 5:
                _session(rec, sid, k, flight="HAT999", passed=False)
            elif k == 2:
                _session(rec, sid, k, update=False)
            elif k == 6:
                _session(rec, sid, k, text="Sorry, I could not change anything today, goodbye.")
            elif k == 3:
                _session(rec, sid, k, flight="HAT001")
            elif k == 1:
                _session(rec, sid, k, seat="-B")
            else:
                _session(rec, sid, k)


@pytest.fixture
def view(tmp_path: Path) -> Iterator[ViewData]:
    store = tmp_path / ".sdb"
    _record(store)
    st = Store.open(store)
    data = ViewData.for_diff(st, diff_runs(st, "base", "cand", CONFIG, save=False), config=CONFIG)
    yield data
    data.close()


def _ids(page: dict[str, Any]) -> list[str]:
    return [r["session_id"] for r in page["rows"]]


def test_the_header_has_the_runs_the_summary_and_the_facets(view: ViewData) -> None:
    h = view.header()
    assert (h["base_run"], h["candidate_run"], h["comparison"]) == ("base", "cand", "commit")
    assert h["sessions"] == SESSIONS and h["summary"]["outcomes"]["negative_flips"] == 1
    assert h["facets"]["reasons"] == ["args_changed", "missing", "speech_changed"]
    assert h["facets"]["layers"] == ["speech", "write"]
    assert "update_flight" in h["facets"]["actions"] and h["verdict"] is None
    orjson.dumps(h)  # JSON-ready


def test_the_pass_to_fail_session_is_first_then_writes_by_position_then_speech_then_equal(view: ViewData) -> None:
    page = view.sessions()
    assert page["total"] == SESSIONS and page["offset"] == 0
    ids = _ids(page)
    assert ids[0] == "task-5"  # pass -> fail
    assert page["rows"][0]["outcome"] == {"base": True, "candidate": False, "change": "pass->fail"}
    # then the write divergences by their first one's place: task-2 and task-3 at the update (by id),
    # task-1 at a later write
    assert ids[1:4] == ["task-2", "task-3", "task-1"]
    assert ids[4] == "task-6"  # a speech divergence only
    assert ids[5:] == ["task-0", "task-4", "task-7"]  # equal sessions, by id
    assert [r["rank"] for r in page["rows"]] == list(range(SESSIONS))
    first = page["rows"][0]["first"]
    assert first is not None and (first["layer"], first["reason"], first["action"]) == (
        "write",
        "args_changed",
        "update_flight",
    )
    assert page["rows"][0]["counts"] == {"write": 1, "read": 0, "speech": 0}
    assert page["rows"][4]["counts"] == {"write": 0, "read": 0, "speech": 1}
    assert page["rows"][5]["first"] is None and page["rows"][5]["repeats"] is None


def test_differ_only_drops_the_equal_sessions(view: ViewData) -> None:
    page = view.sessions(differ_only=True)
    assert page["total"] == 5 and _ids(page) == ["task-5", "task-2", "task-3", "task-1", "task-6"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"layer": "speech"}, ["task-6"]),
        ({"reason": "missing"}, ["task-2"]),
        ({"reason": "args_changed"}, ["task-5", "task-3", "task-1"]),
        ({"action": "cancel_seat"}, ["task-1"]),
        ({"action": "update_flight"}, ["task-5", "task-2", "task-3"]),
        ({"action": "update_flight", "reason": "missing"}, ["task-2"]),
        ({"text": "FLIGHT"}, ["task-5", "task-2", "task-3"]),  # the changed field's path, any case
        ({"text": "task-7"}, ["task-7"]),  # a session id
        ({"outcome": "pass->fail"}, ["task-5"]),
        ({"outcome": "pass"}, ["task-2", "task-3", "task-1", "task-6", "task-0", "task-4", "task-7"]),
        ({"outcome": "fail"}, []),
        ({"layer": "write", "outcome": ""}, ["task-2", "task-3", "task-1"]),
        ({"text": "id"}, ["task-1"]),  # cancel_seat's changed path
    ],
)
def test_filters_narrow_the_list(view: ViewData, filters: dict[str, Any], expected: list[str]) -> None:
    page = view.sessions(**filters)
    assert _ids(page) == expected and page["total"] == len(expected)


@pytest.mark.parametrize(
    "bad", [{"layer": "writes"}, {"reason": "nope"}, {"outcome": "flipped"}, {"limit": 0}, {"offset": -1}]
)
def test_a_bad_filter_is_a_usage_error(view: ViewData, bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        view.sessions(**bad)


def test_pages_are_disjoint_and_cover_the_list(view: ViewData) -> None:
    whole = _ids(view.sessions())
    pages = [view.sessions(offset=k, limit=3) for k in range(0, SESSIONS, 3)]
    assert [len(p["rows"]) for p in pages] == [3, 3, 2]
    assert all(p["total"] == SESSIONS for p in pages)
    assert [sid for p in pages for sid in _ids(p)] == whole
    assert view.sessions(offset=SESSIONS)["rows"] == []


def _actions(rows: list[dict[str, Any]], side: str) -> list[str | None]:
    return [r[side]["name"] if r[side] is not None else None for r in rows]


def test_a_missing_action_is_a_gap_and_the_rows_after_it_stay_paired(view: ViewData) -> None:
    detail = view.session("task-2")
    rows = detail["rows"]
    assert _actions(rows, "base") == ["get_reservation", "update_flight", "cancel_insurance", "cancel_seat", "message"]
    assert _actions(rows, "candidate") == ["get_reservation", None, "cancel_insurance", "cancel_seat", "message"]
    gap = rows[1]
    assert gap["divergence"] is not None and gap["divergence"]["reason"] == "missing"
    assert all(r["divergence"] is None for r in rows[2:])  # the rest still paired, equal
    assert detail["first"] == {"write": 1, "read": None, "speech": None}
    base = rows[2]["base"]
    assert base["effects"] == [{"name": "cancel_insurance", "status": "ok", "result": {"content": "ok"}}]
    assert base["layer"] == "write" and rows[0]["base"]["layer"] == "read"
    assert base["llm_seq"] is not None and base["args"] == {"id": "R2"}
    assert detail["outcome"]["change"] == "" and detail["repeats"] == 1
    orjson.dumps(detail)


def test_an_args_changed_row_carries_the_changed_field_paths(view: ViewData) -> None:
    rows = view.session("task-5")["rows"]
    (changed,) = [r for r in rows if r["divergence"] is not None]
    assert changed["base"]["args"]["flight"] == FLIGHT and changed["candidate"]["args"]["flight"] == "HAT999"
    assert changed["divergence"]["reason"] == "args_changed"
    assert changed["divergence"]["fields"] == [{"path": "flight", "old": FLIGHT, "new": "HAT999"}]


def test_a_speech_divergence_carries_a_word_diff(view: ViewData) -> None:
    detail = view.session("task-6")
    (said,) = [r for r in detail["rows"] if r["divergence"] is not None]
    words = said["divergence"]["words"]
    assert said["divergence"]["reason"] == "speech_changed" and said["divergence"]["similarity"] < 0.8
    assert said["base"]["text"] == f"Your reservation R6 is now on flight {FLIGHT}."
    old = "".join(t for op, t in words if op in "=-")
    new = "".join(t for op, t in words if op in "=+")
    assert old == said["base"]["text"] and new == said["candidate"]["text"]
    assert {op for op, _ in words} == {"-", "+"}  # no word in common here
    assert detail["first"]["speech"] == detail["rows"].index(said)


def test_call_returns_the_whole_request_as_show_full_prints_it(view: ViewData, sdbctl: CLI) -> None:
    row = view.session("task-3")["rows"][3]  # the fourth call: its request is stored as a delta
    seq = row["candidate"]["llm_seq"]
    call = view.call("candidate", "task-3", 0, seq)
    out = sdbctl("show", "cand", "--session", "task-3", "--kind", "llm", "--full", "--json", "--limit", "0")
    assert out.returncode == 0, out.stderr
    shown = {e["seq"]: e for e in json.loads(out.stdout)}
    assert call["request"] == shown[seq]["payload"]["request"]
    assert call["request"]["tools"] == TOOLS and len(call["request"]["messages"]) == 8
    assert call["response"] == {"choices": [{"tool": "cancel_seat"}]}
    assert (call["side"], call["seq"], call["model"], call["tokens_in"]) == ("candidate", seq, "m", 7)
    raw = json.loads(sdbctl("show", "cand", "--session", "task-3", "--kind", "llm", "--json", "--limit", "0").stdout)
    assert "request_delta" in {e["seq"]: e for e in raw}[seq]["payload"]  # it was stored linearly


def test_unknown_session_side_repeat_or_seq_is_a_usage_error(view: ViewData) -> None:
    asks: list[Callable[[], object]] = [
        lambda: view.session("task-99"),
        lambda: view.session("task-1", 1),
        lambda: view.call("both", "task-1", 0, 0),
        lambda: view.call("base", "task-99", 0, 0),
        lambda: view.call("base", "task-1", 0, 2),  # seq 2 is an action, not an llm event
    ]
    for ask in asks:
        with pytest.raises(UsageError):
            ask()


def test_a_page_of_a_large_list_is_served_from_the_prepared_list(tmp_path: Path) -> None:
    """A page of a large list is one query on the list prepared when the view opened, never a new read
    of the runs (which is what made it slow): with the store's files gone, pages still come, right."""
    store = tmp_path / ".sdb"
    n = 3_000
    for run in ("base", "cand"):
        with Recorder(store=store, run_id=run) as rec:
            for k in range(n):
                s = rec.session(f"s{k:05d}")
                llm = s.llm({"messages": []}, {}, model="m", step="a")
                s.action("update", {"v": k % 7 if run == "cand" and k % 3 == 0 else 0}, step="a", parent=llm)
    st = Store.open(store)
    data = ViewData.for_diff(st, diff_runs(st, "base", "cand", DiffConfig(), save=False), config=DiffConfig())
    try:
        first = data.sessions(limit=200)
        shutil.rmtree(store)
        page = data.sessions(offset=600, limit=200, differ_only=True)
        assert page["total"] == len([k for k in range(n) if k % 3 == 0 and k % 7]) and len(page["rows"]) == 200
        assert first["total"] == n and len({r["session_id"] for r in page["rows"]}) == 200
    finally:
        data.close()


def _shown(view: ViewData, session_id: str, repeat: int = 0) -> list[tuple[int | None, int | None, str]]:
    """The divergences a session's detail shows: (base seq, candidate seq, reason) of each row with one."""
    rows = view.session(session_id, repeat)["rows"]
    return [
        (r["base"] and r["base"]["seq"], r["candidate"] and r["candidate"]["seq"], r["divergence"]["reason"])
        for r in rows
        if r["divergence"] is not None
    ]


def _every_divergence_is_shown_once(view: ViewData) -> None:
    wanted: dict[tuple[str, int], list[tuple[int | None, int | None, str]]] = {}
    for d in view.result.divergences:
        wanted.setdefault((d.session_id, d.repeat), []).append((d.base_seq, d.candidate_seq, d.reason))
    assert wanted
    for (sid, rep), divs in wanted.items():
        assert sorted(_shown(view, sid, rep), key=repr) == sorted(divs, key=repr), (sid, rep)


def test_every_divergence_of_a_diff_by_commit_is_shown_once_at_its_actions(view: ViewData) -> None:
    _every_divergence_is_shown_once(view)


def test_a_step_mode_replay_is_shown_step_by_step(store: Path) -> None:
    """The renewal workload replayed under another prompt (teacher-forced): compared by step."""
    record_run(store, "contract-renewal", "base", sessions=12)
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v2", run_id="v2"))
    st = Store.open(store)
    data = ViewData.for_diff(st, diff_runs(st, "base", "v2", save=False), config=DiffConfig())
    try:
        assert data.header()["comparison"] == "step"
        _every_divergence_is_shown_once(data)
        sid = data.sessions(differ_only=True)["rows"][0]["session_id"]
        rows = data.session(sid)["rows"]
        paired = [r for r in rows if r["base"] is not None and r["candidate"] is not None]
        assert paired and all(r["base"]["step"] == r["candidate"]["step"] for r in paired)  # pairs within a step
    finally:
        data.close()


def test_repeats_are_grouped_under_their_session_with_their_agreement(tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    with Recorder(store=store, run_id="base") as rec:
        for k in range(2):
            _session(rec, f"task-{k}", k)
    with Recorder(store=store, run_id="cand", meta={"repeat": 3}) as rec:
        for k in range(2):
            for r in range(3):
                # task-1's repeat 2 changes its flight; every other repeat is the base's
                _session(rec, f"task-{k}" + (f"#r{r}" if r else ""), k, flight="HAT999" if (k, r) == (1, 2) else FLIGHT)
    st = Store.open(store)
    data = ViewData.for_diff(st, diff_runs(st, "base", "cand", CONFIG, save=False), config=CONFIG)
    try:
        rows = data.sessions()["rows"]
        assert [r["session_id"] for r in rows] == ["task-1", "task-0"]  # no session id with #rK in the list
        assert rows[0]["repeats"] == {"n": 3, "equal": 2} and rows[1]["repeats"] == {"n": 3, "equal": 3}
        assert rows[0]["first"] is not None and rows[0]["first"]["repeat"] == 2
        assert _shown(data, "task-1", 0) == [] and _shown(data, "task-1", 1) == []
        ((_, _, reason),) = _shown(data, "task-1", 2)
        assert reason == "args_changed"
        detail = data.session("task-1", 2)
        (changed,) = [r for r in detail["rows"] if r["divergence"] is not None]
        assert changed["candidate"]["args"]["flight"] == "HAT999" and detail["repeat"] == 2
        call = data.call("candidate", "task-1", 2, changed["candidate"]["llm_seq"])
        assert call["response"] == {"choices": [{"tool": "update_flight"}]}
        with pytest.raises(UsageError):
            data.session("task-1", 3)
    finally:
        data.close()


def test_an_action_a_guard_refused_is_paired_with_the_base_action_and_shows_the_verdict(tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    with Recorder(store=store, run_id="base") as rec:
        _session(rec, "task-0", 0)
    with Recorder(store=store, run_id="cand") as rec:
        c = Conversation(rec.session("task-0"))
        c.call("call-001", "get_reservation", {"id": "R0"})
        llm = c.s.llm({"messages": list(c.messages), "tools": TOOLS}, {"choices": []}, model="m", step="call-002")
        act = c.s.action("update_flight", {"id": "R0", "flight": FLIGHT}, step="call-002", parent=llm, status="gated")
        c.s.gate("fare-policy", "deny", "over the fare limit", parent=act)
        c.call("call-003", "cancel_insurance", {"id": "R0"})
        c.call("call-004", "cancel_seat", {"id": "R0"})
        c.say("call-005", f"Your reservation R0 is now on flight {FLIGHT}.")
        c.s.state("outcome", {"value": 1.0})
    st = Store.open(store)
    data = ViewData.for_diff(st, diff_runs(st, "base", "cand", CONFIG, save=False), config=CONFIG)
    try:
        rows = data.session("task-0")["rows"]
        assert _actions(rows, "base") == _actions(rows, "candidate")  # the refused twin sits beside its base
        (refused,) = [r for r in rows if r["divergence"] is not None]
        assert refused["divergence"]["reason"] == "gate_changed"
        assert refused["candidate"]["status"] == "gated" and refused["base"]["status"] == "ok"
        assert refused["candidate"]["gates"] == [
            {"name": "fare-policy", "decision": "deny", "reason": "over the fare limit", "status": "gated"}
        ]
        assert len(rows) == 5
    finally:
        data.close()
