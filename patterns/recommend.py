"""The pattern-selection method: five steps from a description of the workload to a decision record.

1. classify the runtime: conversational (seconds), autonomous (minutes), long-horizon (days);
2. choose the state spine: P3 (event log) or P5 (state machine);
3. wrap it with coordination: P1 (delegation), P2 (scatter-gather + saga);
4. bound it with control: P4 (supervisor + gate), P6 (human in the loop);
5. sequence the build.

The input is a :class:`WorkloadProfile`, from flags or from a TOML file's ``[workload]`` table.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from sdbctl.sdb.errors import SdbError

Runtime = Literal["conversational", "autonomous", "long-horizon"]
RUNTIMES: tuple[str, ...] = ("conversational", "autonomous", "long-horizon")


@dataclass(frozen=True)
class WorkloadProfile:
    """What the method needs to know about a workload."""

    name: str = "workload"
    runtime: str = "autonomous"
    external_events: bool = False  # facts arrive from outside mid-episode
    audit_log: bool = False  # history must be replayable event by event
    concurrent_writers: bool = False  # several workers update one entity
    deadlines: bool = False  # timers: something must happen by a date
    specialists: int = 0  # distinct kinds of expertise or tools
    fan_out: bool = False  # several sources asked at once, some may fail
    multi_system_writes: bool = False  # writes to several systems that must be undone together
    side_effects: bool = True  # the agent acts on the world (sends, pays, writes)
    policy: bool = False  # a written policy bounds those side effects
    human_approval: bool = False  # some decisions must be a person's

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise SdbError(f"runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)}")
        if self.specialists < 0:
            raise SdbError("specialists must be 0 or more")


def load_profile(path: Path) -> WorkloadProfile:
    """A profile from the ``[workload]`` table of a TOML file (unknown keys are refused)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SdbError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SdbError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("workload", data)
    known = {f.name for f in fields(WorkloadProfile)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SdbError(f"{path}: unknown key(s) {', '.join(unknown)} in [workload]; known: {', '.join(sorted(known))}")
    try:
        return WorkloadProfile(**table)
    except TypeError as exc:
        raise SdbError(f"{path}: {exc}") from None


@dataclass
class Recommendation:
    """The outcome of the five steps, and the six-line decision record they end in."""

    profile: WorkloadProfile
    spine: str
    spine_why: str
    coordination: list[str] = field(default_factory=list)
    coordination_why: list[str] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    control_why: list[str] = field(default_factory=list)
    build_order: list[str] = field(default_factory=list)
    watch: str = ""

    def record(self) -> list[str]:
        """The six-line architecture decision record."""
        p = self.profile
        coord = " + ".join(self.coordination) or "none"
        ctrl = " + ".join(self.control) or "none"
        return [
            f"Context: {p.name} is {'an' if p.runtime[0] in 'aeiou' else 'a'} {p.runtime} workload "
            f"({_runtime_scale(p.runtime)}).",
            f"Spine: {self.spine}, because {self.spine_why}.",
            f"Coordination: {coord}" + (f", because {'; '.join(self.coordination_why)}." if self.coordination else "."),
            f"Control: {ctrl}" + (f", because {'; '.join(self.control_why)}." if self.control else "."),
            "Build order: " + ", ".join(f"{i}) {t}" for i, t in enumerate(self.build_order, 1)) + ".",
            f"Watch in replay: {self.watch}.",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.__dict__,
            "steps": {
                "1_runtime": self.profile.runtime,
                "2_spine": self.spine,
                "3_coordination": self.coordination,
                "4_control": self.control,
                "5_build_order": self.build_order,
            },
            "decision_record": self.record(),
        }


def _runtime_scale(runtime: str) -> str:
    return {"conversational": "seconds", "autonomous": "minutes", "long-horizon": "days"}[runtime]


def recommend(p: WorkloadProfile) -> Recommendation:
    """Walk the five steps for ``p``."""
    # step 2: the spine
    wants_log = p.external_events or p.audit_log
    waits_for_humans = p.human_approval and p.runtime != "conversational"  # a chat waits in the conversation
    wants_row = p.concurrent_writers or p.deadlines or p.runtime == "long-horizon" or waits_for_humans
    if wants_row:
        spine = "P5 shared state machine"
        why = [
            r
            for r, on in [
                ("several workers update one entity", p.concurrent_writers),
                ("deadlines need timers on a versioned row", p.deadlines),
                ("episodes last days", p.runtime == "long-horizon"),
                ("human_required must be a state the episode can wait in", p.human_approval),
            ]
            if on
        ]
        spine_why = " and ".join(why)
        if wants_log:
            spine += ", with a P3 log for outside events"
            spine_why += "; outside events arrive mid-flight and go through an append-only log the row absorbs"
    elif wants_log:
        spine = "P3 event log"
        spine_why = "history must be replayable and facts arrive from outside; consumers stay idempotent"
    else:
        spine = "P3 event log"
        spine_why = "a short episode's state is the fold of what happened; a log is the cheapest spine to replay"
    rec = Recommendation(p, spine, spine_why)
    # step 3: coordination
    if p.specialists >= 2:
        rec.coordination.append("P1")
        rec.coordination_why.append(f"{p.specialists} specialists need one owner and a deterministic merge")
    if p.fan_out or p.multi_system_writes:
        rec.coordination.append("P2")
        rec.coordination_why.append(
            " and ".join(
                w
                for w, on in [
                    ("peers are asked at once and some fail", p.fan_out),
                    ("writes to several systems need compensation", p.multi_system_writes),
                ]
                if on
            )
        )
    # step 4: control
    if p.side_effects or p.policy:
        rec.control.append("P4")
        rec.control_why.append(
            "side effects must be checked "
            + ("against the policy " if p.policy else "")
            + "before they happen, by a gate that records who decided"
        )
    if p.human_approval or p.runtime == "long-horizon":
        rec.control.append("P6")
        rec.control_why.append("some decisions are a person's, and an operator needs a kill switch and throttles")
    # step 5: build order: spine, then the gate before any side effect, then coordination, then humans
    rec.build_order = [spine.split(" ")[0]]
    if "with a P3 log" in spine:
        rec.build_order.append("P3")
    rec.build_order += [t for t in ("P4",) if t in rec.control]
    rec.build_order += rec.coordination
    rec.build_order += [t for t in ("P6",) if t in rec.control]
    watch = []
    if "P4" in rec.control:
        watch.append("gate_changed on critical actions")
    if rec.spine.startswith("P5"):
        watch.append("state_changed at the same step")
    else:
        watch.append("the log's events and their order")
    if "P1" in rec.coordination:
        watch.append("the owner's dispatch actions")
    if "P2" in rec.coordination:
        watch.append("compensations that appear or vanish")
    rec.watch = ", ".join(watch)
    return rec
