"""What a verdict is computed from must be what it says it is (issue 20 follow-up, review items 2 and 6):
a manifest's ``agent`` selects a registered workload's success states and pure actions only when that
workload agrees with the run's events, and base and candidate name the same one; a ``--noise`` run is a
self-replay of the base's model, as the llm events' ``model`` column says, not a run of another model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb import agents
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.boundary import Boundary
from sdbctl.sdb.diff._noise import model_identity
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store
from tests.conftest import CLI, assert_one_line_error

sdbctl.fixtures.workloads.register_all()

# the review's gate: outcomes only, so that the success states alone decide the verdict
OUTCOME_GATE = """[gate]
max_step_divergence = false
max_session_divergence = false
fail_on_outcome_regression = true
max_negative_flips = 0
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The review's store, small: a recording under v1, a step replay and a session replay under v2,
    a self-replay of v1 with noise and a "noise" run of v2, both with repeats."""
    store = tmp_path_factory.mktemp("inputs") / ".sdb"
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=20, store=str(store), run_id="base")
    for run_id, model, mode, repeat in (
        ("cand", "sim:renewal@v2", "step", 1),
        ("sess", "sim:renewal@v2", "session", 1),
        ("noise", "sim:renewal@v1?noise=0.05", "step", 3),
        ("noise_v2", "sim:renewal@v2", "step", 3),
    ):
        replay(Store.open(store), "base", ReplayOptions(model=model, mode=mode, repeat=repeat, run_id=run_id))
    opts = ReplayOptions(model="sim:renewal@v1?noise=0.05", repeat=3, run_id="noise_p2", prompts={"offer": "v2"})
    replay(Store.open(store), "base", opts)
    return store


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    """A copy of the built store for this test to tamper with."""
    copy = tmp_path / ".sdb"
    shutil.copytree(built, copy)
    return copy


def _tamper(store: Path, run: str, **fields: Any) -> None:
    path = store / "runs" / run / "run.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


# -- review item 2: the manifest's agent chooses the success states ---------------------------------------


def test_a_manifest_naming_another_workload_is_a_damaged_run_not_other_success_states(
    sdbctl: CLI, store: Path, tmp_path: Path
) -> None:
    (tmp_path / "sdbctl.toml").write_text(OUTCOME_GATE)
    clean = sdbctl("gate", "sess", "--base", "base")
    assert clean.returncode == 1, clean.stdout  # v2 loses renewals: a real regression
    assert "success: renewed, restructured (workload contract-renewal)" in clean.stdout
    _tamper(store, "base", agent="research")  # research's success states: published, published_partial
    assert_one_line_error(sdbctl("gate", "sess", "--base", "base"), "run 'base'", "research", "propose_offer")
    _tamper(store, "sess", agent="research")  # both runs say research: each is checked against its events
    assert_one_line_error(sdbctl("gate", "sess", "--base", "base"), "run 'base'", "research")
    assert_one_line_error(sdbctl("diff", "base", "sess"), "run 'base'", "research")


@pytest.mark.parametrize(
    ("other", "needles"),
    [
        (None, ("run 'base'", "contract-renewal", "run 'sess'", "no registered workload")),
        ("evil.py:W", ("run 'base'", "contract-renewal", "run 'sess'", "evil.py:W")),
        # a registered workload the candidate's events do not fit: that run is the damaged one
        ("support-triage", ("run 'sess'", "support-triage", "propose_offer")),
    ],
)
def test_base_and_candidate_must_name_the_same_workload(
    sdbctl: CLI, store: Path, tmp_path: Path, other: str | None, needles: tuple[str, ...]
) -> None:
    (tmp_path / "sdbctl.toml").write_text(OUTCOME_GATE)
    _tamper(store, "sess", agent=other)
    assert_one_line_error(sdbctl("gate", "sess", "--base", "base"), *needles)
    _tamper(store, "base", agent=other)  # both runs name it: the same agent, judged by their events
    out = sdbctl("gate", "sess", "--base", "base")
    if other == "support-triage":
        assert_one_line_error(out, "run 'base'", "support-triage")
    else:  # no registered workload consulted: no success states, so no outcome check can run
        assert_one_line_error(out, "outcome")


def test_the_project_config_decides_the_success_states_before_any_workload(
    sdbctl: CLI, store: Path, tmp_path: Path
) -> None:
    """``[outcome] success`` given: the workload's success states are not consulted, nor its states."""
    (tmp_path / "sdbctl.toml").write_text(OUTCOME_GATE + '[outcome]\nsuccess = ["renewed", "restructured"]\n')
    out = sdbctl("gate", "sess", "--base", "base")
    assert out.returncode == 1 and "success: renewed, restructured (sdbctl.toml)" in out.stdout


class _StatesWorkload:
    """A registered workload's code: its vocabulary (lookup, book), its states and its success states."""

    success_states = ("done",)
    states = ("started", "done", "failed")

    def replay_boundary(self) -> Boundary:
        b = Boundary("states-test")

        @b.action(pure=True)
        def lookup(key: str) -> str:
            """Read one record."""
            return key

        @b.action()
        def book(key: str) -> str:
            """Write one record."""
            return key

        return b


def _run(store: Path, run_id: str, action: str, terminal: str) -> None:
    with Recorder(store=store, run_id=run_id, meta={"agent": "states-test"}) as rec:
        for k in range(3):
            s = rec.session(f"t{k}")
            s.state("started", {})
            for step, name in (("1", "lookup"), ("2", action)):
                llm = s.llm({"messages": [{"role": "user", "content": step}]}, {"choices": []}, model="m", step=step)
                s.action(name, {"key": f"x{k}"}, step=step, parent=llm)
            s.state(terminal if k else "done", {})


@pytest.mark.parametrize(
    ("action", "terminal", "needles"),
    [
        ("book", "published", ("run 'cand'", "states-test", "published")),  # a state the workload never writes
        ("publish_report", "done", ("run 'cand'", "states-test", "publish_report")),  # an action it does not have
    ],
)
def test_a_run_whose_events_do_not_fit_its_named_workload_is_refused(
    sdbctl: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str, terminal: str, needles: tuple[str, ...]
) -> None:
    monkeypatch.setitem(agents._SHORT_NAMES, "states-test", _StatesWorkload)
    store = tmp_path / ".sdb"
    _run(store, "base", "book", "failed")
    _run(store, "cand", action, terminal)
    assert_one_line_error(sdbctl("diff", "base", "cand"), *needles)
    _run(store, "fine", "book", "failed")  # the same runs, fitting: compared, with the workload's rules
    summary = json.loads(sdbctl("diff", "base", "fine", "--json").stdout)["summary"]
    assert {"rule": "success", "values": ["done"], "source": "workload states-test", "obeyed": True} in summary["rules"]


def test_an_action_the_model_made_up_is_no_sign_of_another_workload(
    sdbctl: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown tool the boundary refused (status ``invalid``) is the model's error, not the run's."""
    monkeypatch.setitem(agents._SHORT_NAMES, "states-test", _StatesWorkload)
    store = tmp_path / ".sdb"
    _run(store, "base", "book", "failed")
    with Recorder(store=store, run_id="cand", meta={"agent": "states-test"}) as rec:
        for k in range(3):
            s = rec.session(f"t{k}")
            llm = s.llm({"messages": []}, {"choices": []}, model="m", step="1")
            s.action("lookup", {"key": f"x{k}"}, step="1", parent=llm)
            llm = s.llm({"messages": []}, {"choices": []}, model="m", step="2")
            s.action("teleport", {"key": "x"}, step="2", parent=llm, status="invalid")
            s.state("failed", {})
    assert sdbctl("diff", "base", "cand").returncode == 0


# -- review item 6: a noise run of another model ----------------------------------------------------------


def test_a_noise_run_of_another_model_is_refused(sdbctl: CLI, store: Path) -> None:
    honest = sdbctl("gate", "cand", "--noise", "noise", "--noise-aware")
    assert honest.returncode == 1 and "(self-replay noise)" in honest.stdout
    out = sdbctl("gate", "cand", "--noise", "noise_v2", "--noise-aware")
    assert_one_line_error(out, "'noise_v2'", "sim:renewal@v2", "sim:renewal@v1", "'base'")
    assert_one_line_error(sdbctl("diff", "base", "cand", "--noise", "noise_v2"), "'noise_v2'")


def test_a_noise_run_of_another_prompt_version_is_refused(sdbctl: CLI, store: Path) -> None:
    out = sdbctl("gate", "cand", "--noise", "noise_p2", "--noise-aware")
    assert_one_line_error(out, "'noise_p2'", "prompt", "offer@v2", "offer@v1")


@pytest.mark.parametrize(
    ("base", "noise", "same"),
    [
        ("sim:renewal@v1", "sim:renewal@v1?noise=0.05", True),
        ("sim:renewal@v1", "sim:renewal@v2", False),
        ("openai:gpt-4o-mini", "openai:gpt-4o-mini?temperature=0.7", True),
        ("gpt-4o-mini", "openai:gpt-4o-mini", True),  # an SDK recording names the model bare
        ("openai:gpt-4o-mini", "openai:gpt-4o", False),
        ("llama:smollm2-135m", "llama:smollm2-135m?seed=3&temperature=0.7", True),
        ("llama:smollm2-135m", "llama:gemma3-270m", False),
        ("ollama:llama3:8b", "llama3:8b", False),  # not a provider's prefix: part of the name
    ],
)
def test_a_models_identity_ignores_its_options_and_its_providers_prefix(base: str, noise: str, same: bool) -> None:
    assert (model_identity(base) == model_identity(noise)) is same


def _log(store: Path, run_id: str, *, model: str | None) -> None:
    """A run of three sessions: a tool-call log (``model`` None), or llm events naming ``model``."""
    with Recorder(store=store, run_id=run_id) as rec:
        for k in range(3):
            s = rec.session(f"t{k}")
            parent = s.llm({"messages": []}, {"choices": []}, model=model, step="1") if model else None
            s.action("book", {"key": f"x{k}"}, step="1", parent=parent)


def test_a_base_whose_events_name_no_model_says_the_noise_run_could_not_be_checked(sdbctl: CLI, tmp_path: Path) -> None:
    store = tmp_path / ".sdb"
    for run_id in ("base", "cand", "noise"):
        _log(store, run_id, model=None)
    out = sdbctl("diff", "base", "cand", "--noise", "noise", "--json")
    assert out.returncode == 0, out.stderr
    assert "could not be checked" in json.loads(out.stdout)["summary"]["drift"]["source"]
    assert "could not be checked" in sdbctl("diff", "base", "cand", "--noise", "noise").stdout
    _log(store, "named", model="openai:gpt-4o")  # the base names none: a noise run's model cannot be compared
    assert "could not be checked" in sdbctl("diff", "base", "cand", "--noise", "named").stdout
    _log(store, "base2", model="openai:gpt-4o")
    _log(store, "cand2", model="openai:gpt-4o")
    assert_one_line_error(sdbctl("diff", "base2", "cand2", "--noise", "noise"), "'noise'", "gpt-4o", "'base2'")
