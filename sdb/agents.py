"""Agents that sdbctl can run: the workload interface, the context an episode runs in, and loading.

A *workload* is an agent plus its inputs: ``sessions(n, seed, options)`` lists the episodes, and
``run_session(ctx, item)`` runs one against a model through the boundary and returns its terminal
state. An agent reference is a registered short name (``contract-renewal``), ``module:attr`` or
``path/to/file.py:attr``; the attribute is a workload object (or a class making one).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sdbctl.sdb.boundary import Boundary, Commit, Crossing, Guard
from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.events import EventSink
from sdbctl.sdb.prompts import PromptLibrary
from sdbctl.sdb.providers import Provider
from sdbctl.sdb.settings import import_from_cwd


class AgentError(SdbError):
    """An agent reference that names nothing runnable, or options it does not take."""


@dataclass(frozen=True)
class SessionItem:
    """One episode to run: its session id and its input."""

    session_id: str
    data: Any


@runtime_checkable
class Workload(Protocol):
    """An agent and its episodes."""

    name: str
    description: str
    baseline_model: str
    patterns: tuple[str, ...]
    prompts: PromptLibrary

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check and complete the options (``spine`` ...); raises :class:`AgentError` on a bad one."""
        ...

    def sessions(self, n: int | None, seed: int, options: Mapping[str, Any]) -> Iterable[SessionItem]:
        """The first ``n`` episodes (all when None), best made one at a time as they are taken: a load
        test asks for millions."""
        ...

    async def run_session(self, ctx: AgentContext, item: SessionItem) -> str:
        """Run one episode; returns its terminal state."""
        ...


@dataclass
class AgentContext:
    """What one episode runs with: where events go, which model answers, which prompt versions."""

    sink: EventSink
    model: Provider
    prompts: PromptLibrary
    seed: int = 0
    repeat: int = 0
    prompt_versions: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    truth: Callable[[dict[str, Any]], None] | None = None
    commit: Commit = "execute"  # how crossings commit: run handlers, or (replay) serve recorded effects
    humans: Callable[[Callable[[Mapping[str, Any]], Any]], Callable[[Mapping[str, Any]], Any]] | None = None

    def human(self, decider: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
        """The human to ask: ``decider`` itself, or in a replay the recorded decisions (identical
        questions only)."""
        return self.humans(decider) if self.humans is not None else decider

    def prompt_ref(self, ref: str) -> str:
        """``ref`` with its version replaced when a newer one was asked for (``--prompt offer@v2``)."""
        name = ref.partition("@")[0]
        version = self.prompt_versions.get(name)
        return f"{name}@{version}" if version else ref

    async def ask(
        self,
        prompt: str,
        variables: Mapping[str, Any],
        *,
        tools: Sequence[dict[str, Any]] = (),
        step: str | None = None,
        actor: str | None = None,
        pattern: str | None = None,
        history: Sequence[dict[str, Any]] = (),
        parent: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Render ``prompt``, ask the model, record the ``llm`` event; returns (request, response, seq)."""
        ref = self.prompt_ref(prompt)
        messages = self.prompts.render(ref, variables) + list(history)
        request: dict[str, Any] = {"model": self.model.spec, "messages": messages, "temperature": 0}
        if tools:
            request["tools"] = list(tools)
        completion = await self.model.complete(request, seed=self.seed, repeat=self.repeat)
        seq = self.sink.llm(
            request,
            completion.response,
            model=self.model.spec,
            prompt=ref,
            variables=dict(variables),
            step=step,
            latency_ms=completion.latency_ms,
            parent=parent,
            actor=actor,
            pattern=pattern,
        )
        if completion.truth is not None and self.truth is not None:
            self.truth(
                {
                    "session_id": self.sink.session_id,
                    "step": step,
                    "llm_seq": seq,
                    "prompt": ref,
                    "model": self.model.spec,
                    "repeat": self.repeat,
                    **completion.truth,
                }
            )
        return request, completion.response, seq

    async def decide(
        self,
        boundary: Boundary,
        prompt: str,
        variables: Mapping[str, Any],
        *,
        tools: Sequence[str] | None = None,
        step: str | None = None,
        actor: str | None = None,
        pattern: str | None = None,
        guards: Sequence[Guard] = (),
        commit: Commit | None = None,
        retries: int = 1,
    ) -> Crossing:
        """Ask, cross the boundary, and hand a rejection back to the model up to ``retries`` times."""
        commit = self.commit if commit is None else commit
        history: list[dict[str, Any]] = []
        crossing: Crossing | None = None
        for _ in range(retries + 1):
            _, response, seq = await self.ask(
                prompt,
                variables,
                tools=boundary.tools(tools),
                step=step,
                actor=actor,
                pattern=pattern,
                history=history,
            )
            crossings = await boundary.cross(
                self.sink, response, llm_seq=seq, step=step, actor=actor, pattern=pattern, guards=guards, commit=commit
            )
            crossing = crossings[0]
            if crossing.rejection is None:
                return crossing
            message = _assistant_message(response)
            history += ([message] if message else []) + [crossing.rejection.as_tool_message()]
        assert crossing is not None
        return crossing


def _assistant_message(response: Mapping[str, Any]) -> dict[str, Any] | None:
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        message = choices[0].get("message")
        if isinstance(message, Mapping):
            return dict(message)
    return None


_SHORT_NAMES: dict[str, Callable[[], Workload]] = {}


def register_workload(name: str, load: Callable[[], Workload]) -> None:
    """Make ``name`` an agent reference (the workloads register themselves)."""
    _SHORT_NAMES[name] = load


def workload_names() -> list[str]:
    return sorted(_SHORT_NAMES)


def _import_attr(ref: str) -> Any:
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise AgentError(
            f"agent {ref!r}: not a workload ({', '.join(workload_names())}), nor MODULE:ATTR or PATH.py:ATTR"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise AgentError(f"agent {ref!r}: file {target} not found")
        spec = importlib.util.spec_from_file_location(f"sdb_agent_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise AgentError(f"agent {ref!r}: cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise AgentError(f"agent {ref!r}: {target} failed to import ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = import_from_cwd(target)
        except ImportError as exc:
            raise AgentError(f"agent {ref!r}: cannot import module {target!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AgentError(f"agent {ref!r}: module {target!r} has no attribute {attr!r}") from None


def registered_workload(name: str) -> Workload | None:
    """The workload registered under ``name``, else None. For a name read from a store: it may select
    among the workloads this process registered (code sdbctl ships), never name code to import."""
    load = _SHORT_NAMES.get(name)
    return load() if load is not None else None


def pure_actions(workload: object) -> tuple[str, ...]:
    """The actions the workload's code declares read-only (``pure=True`` on its boundary's actions,
    from ``replay_boundary()``): the differ's read layer."""
    make = getattr(workload, "replay_boundary", None)
    if not callable(make):
        return ()
    boundary = make()
    return tuple(sorted(n for n, spec in boundary.actions.items() if spec.pure))


def success_states(workload: object) -> tuple[str, ...]:
    """The terminal states the workload's code declares a success (``success_states``): outcomes."""
    return tuple(str(s) for s in getattr(workload, "success_states", None) or ())


def action_vocabulary(workload: object) -> tuple[str, ...] | None:
    """The action names the workload's boundary knows (``replay_boundary()``); None when it declares no
    boundary or takes any name (``open_vocabulary``): then no name is foreign to it."""
    make = getattr(workload, "replay_boundary", None)
    if not callable(make):
        return None
    boundary = make()
    return None if boundary.open_vocabulary else tuple(sorted(boundary.actions))


def declared_states(workload: object) -> tuple[str, ...] | None:
    """Every state the workload's code writes (``states``), terminal or not; None when it declares none."""
    states = getattr(workload, "states", None)
    return tuple(str(s) for s in states) if states else None


def load_agent(ref: str) -> Workload:
    """The workload an agent reference names."""
    if ref in _SHORT_NAMES:
        return _SHORT_NAMES[ref]()
    obj = _import_attr(ref)
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Workload):
        raise AgentError(f"agent {ref!r}: {type(obj).__name__} is not a workload (needs sessions() and run_session())")
    return obj


def check_simulator(model: str, workload: Workload | None, subject: str) -> None:
    """A simulator answers its own workload's questions only: ``sim:triage@v2`` for the renewal agent
    is refused, naming the simulators that fit (``subject``: what is refused, e.g. ``run 'base'``), for
    record and replay alike, before it gives nothing but parse failures."""
    if not model.startswith("sim:") or workload is None:
        return
    baseline = str(getattr(workload, "baseline_model", "") or "")
    if not baseline.startswith("sim:"):
        return
    family = baseline[4:].split("@", 1)[0]
    asked = model[4:].split("@", 1)[0]
    if asked != family:
        raise UsageError(
            f"{subject} is of agent {workload.name!r}, whose simulators are sim:{family}@vN (e.g. {baseline}); "
            f"{model} simulates another workload"
        )
