"""Step mode: every recorded ``llm`` step asked again with its recorded context, its prompt re-rendered
where a new version is given, its system prompt replaced where ``--system`` asks; the answer crosses
the boundary rules and its actions are written with the source's session and step. Effects are never
executed, so no agent code is needed. Each step's events are written as one unit, so a resumed replay
asks no finished step again."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from sdbctl.sdb.boundary import Boundary, load_actions_setting, write_actions
from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.providers import Completion, ProviderError
from sdbctl.sdb.recording import Session
from sdbctl.sdb.redaction import load_redactor
from sdbctl.sdb.replay._calling import CachedCompletion
from sdbctl.sdb.replay._job import Job
from sdbctl.sdb.replay._options import ReplayOptions
from sdbctl.sdb.replay._source import SourceStep, count_steps, finished_units, iter_steps
from sdbctl.sdb.store import Store


def _request(job: Job, step: SourceStep) -> tuple[dict[str, Any], str | None]:
    """The step's request, its prompt re-rendered where a new version was asked for, and its system
    prompt the one ``--system`` / ``--system-from`` give it (chosen by the recorded request)."""
    request = dict(step.request)
    prompt = step.prompt
    if prompt and job.opts.prompts and job.workload is not None:
        name = prompt.partition("@")[0]
        version = job.opts.prompts.get(name)
        if version is not None and prompt != f"{name}@{version}":
            if step.variables is None:
                raise UsageError(f"step {step.session_id}#{step.seq}: no recorded variables to re-render {prompt}")
            old = job.workload.prompts.render(prompt, step.variables)
            new = job.workload.prompts.render(f"{name}@{version}", step.variables)
            request["messages"] = new + list(request.get("messages", []))[len(old) :]
            prompt = f"{name}@{version}"
    if job.opts.system is not None:  # chosen by the recorded request (its actor, its system prompt)
        request = job.opts.system.apply(step.actor, step.request, request)
    if job.caller is not None and "model" in request:
        request["model"] = job.caller.spec
    return request, prompt


def survey(store: Store, run_id: str, opts: ReplayOptions, *, asks_model: bool) -> tuple[str, ...]:
    """What a step replay says before it asks (one line each): how many requests each ``--system`` rule
    replaces (a rule that matches none is a :class:`UsageError` naming it and the run's actors), and,
    when a model is asked, that no request carries tool definitions, so the candidate can answer only
    with text. Read from the requests the replay asks (:attr:`SourceStep.request`), in one pass that
    stops at the first request with tools when no rule needs counting."""
    change = opts.system
    if opts.mode != "step" or (change is None and not asks_model):
        return ()
    labels = change.labels if change is not None else ()
    replaced, matched = [0] * len(labels), [0] * len(labels)  # by the first rule that matches; by any
    actors: set[str] = set()
    asked = tools = False
    for chunk in iter_steps(store, run_id):
        for step in chunk:
            if step.content_missing:
                continue
            asked = True
            tools = tools or bool(step.request.get("tools"))
            if change is not None:
                actors.add(step.actor)
                found = change.matching(step.actor, step.request)
                for n in found:
                    matched[n] += 1
                if found:
                    replaced[found[0]] += 1
        if tools and change is None:
            break
    notes = []
    if change is not None:
        for rule, n in zip(change.rules, matched, strict=False):
            if not n:
                prompt = ", and no request's recorded system prompt is that file's text" if rule.old else ""
                raise UsageError(
                    f"{rule.label} matches no request of run {run_id}: it has no actor {rule.agent}{prompt} "
                    f"(its actors: {', '.join(sorted(actors)) or 'none'})"
                )
        each = ", ".join(f"{n} by {label}" for label, n in zip(labels, replaced, strict=True))
        notes.append(f"replay: system prompt replaced in {sum(replaced)} requests: {each}")
    if asks_model and asked and not tools:
        notes.append(
            f"replay: run {run_id}'s requests carry no tool definitions: the candidate can answer only with "
            "text (import with --tools FILE)"
        )
    return tuple(notes)


def _boundary(job: Job) -> Boundary:
    """The agent's own replay boundary where it has one, else one that accepts any action name."""
    replay_boundary = getattr(job.workload, "replay_boundary", None)
    return replay_boundary() if callable(replay_boundary) else Boundary("replay", open_vocabulary=True)


class _Unit(NamedTuple):
    """One step to ask (its repeat), with the request and prompt it is asked with and its cache key."""

    step: SourceStep
    repeat: int
    request: dict[str, Any]
    prompt: str | None
    key: str


STEP_BATCH = 2_000  #: source steps read, prepared and asked at a time


class _StepReplay:
    """One step-mode pass over the source run: the boundary, the concurrency gate and the sessions."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.boundary = _boundary(job)
        self.gate = asyncio.Semaphore(job.in_flight)
        self.sinks: dict[str, Session] = {}
        self.redactor = load_redactor()
        # how an open vocabulary reads a text answer: the project's setting, as its recording read it
        # (never the run's manifest, which would choose the verdict)
        self.text_actions = load_actions_setting().text_actions

    def finished(self, chunk: list[SourceStep]) -> None:
        """Let go of the sessions ``chunk`` ended: the source comes by session, so every session of a
        batch but its last is over once the batch is written. Each held its session and the requests
        kept to store its next call as a delta: kept for every session, a 100,000-session replay grew
        to gigabytes."""
        if not chunk:
            return
        last = chunk[-1].session_id  # it may go on in the next batch
        for session_id in [*dict.fromkeys(s.session_id for s in chunk), *self.sinks]:
            if session_id != last and self.sinks.pop(session_id, None) is not None:
                self.job.rec.forget_session(session_id)

    def prepare(self, units: list[tuple[SourceStep, int]]) -> list[_Unit]:
        """Each unit's request and prompt (:func:`_request`) and cache key, the keys looked up in the
        caches at once (:meth:`Caller.look_up`) rather than one query per step."""
        job, caller = self.job, self.job.caller
        prepared = []
        for step, repeat in units:
            request, prompt = _request(job, step)
            # a recorded request read back from canonical JSON (a re-rendered prompt is checked)
            key = caller.key(request, seed=job.seed, plain=prompt == step.prompt) if caller is not None else ""
            prepared.append(_Unit(step, repeat, request, prompt, key))
        if caller is not None:
            caller.look_up(unit.key for unit in prepared)
        return prepared

    async def one(self, unit: _Unit) -> None:
        """Ask ``unit``'s step (its repeat) and write its answer, or its error, as one unit."""
        job = self.job
        step, repeat, request, prompt = unit.step, unit.repeat, unit.request, unit.prompt
        async with self.gate:
            completion: Completion | None = None
            error: ProviderError | None = None
            if job.caller is None:
                response = step.response
                completion = Completion(response if isinstance(response, dict) else {"content": response})
            else:
                try:
                    completion = await job.caller.ask(request, seed=job.seed, repeat=repeat, key=unit.key)
                except ProviderError as exc:
                    error = exc
            with job.rec.unit():
                self._write(step, repeat, request, prompt, completion, error)
            job.progress.done += 1
            job.tick()

    def _write(
        self,
        step: SourceStep,
        repeat: int,
        request: dict[str, Any],
        prompt: str | None,
        completion: Completion | None,
        error: ProviderError | None,
    ) -> None:
        """The step's llm event and its actions (or its error event), and what they count for."""
        job = self.job
        mark = {"source_seq": step.seq, "repeat": repeat}
        sink = self.sinks.get(step.session_id) or self.sinks.setdefault(
            step.session_id, job.rec.session(step.session_id)
        )
        where: dict[str, Any] = {"step": step.step, "actor": step.actor, "pattern": step.pattern}
        outcome = job.outcome(step.session_id, repeat)
        outcome.steps += 1
        if completion is None:
            assert error is not None
            message = self.redactor.text(str(error))
            detail = {"status": error.status, "kind": error.kind}
            sink.error("provider", message, detail=detail, replay=mark, **where)
            job.progress.error(error, message)
            outcome.errors += 1
            outcome.status = "failed"
            outcome.reason = outcome.reason or message
            return
        model = step.model if job.caller is None else job.caller.spec
        if isinstance(completion, CachedCompletion):
            mark["cached"] = True  # the answer is a cache's, not the model's: the diff and gate count it
        seq = sink.llm(
            request,
            completion.response,
            model=model or "unknown",
            prompt=prompt,
            variables=step.variables,
            latency_ms=completion.latency_ms,
            replay=mark,
            **where,
        )
        digests = write_actions(
            sink.action, self.boundary, completion.response, seq, where, text_actions=self.text_actions
        )
        if tuple(digests) != step.actions:
            job.progress.divergences += 1
            outcome.divergences += 1
        if completion.truth is not None:
            at = {"session_id": step.session_id, "step": step.step, "llm_seq": seq, "source_seq": step.seq}
            job.truth({**at, "repeat": repeat, **completion.truth})


def _resumed(job: Job, step: SourceStep, repeat: int, written: tuple[int, ...] | None) -> None:
    """Count a step the attempt being resumed wrote (``written``: its actions' digests, None for its
    provider error) as that attempt counted it, so that a resumed run's counts are the whole run's."""
    outcome = job.outcome(step.session_id, repeat)
    outcome.resumed_steps += 1
    job.progress.skipped += 1
    job.progress.done += 1
    if written is None:
        job.progress.errors += 1
        outcome.errors += 1
    elif written != step.actions:
        job.progress.divergences += 1
        outcome.divergences += 1


async def replay_steps(job: Job) -> None:
    """Replay every step of the source run (of the shard's sessions), ``repeat`` times each."""
    counts, _ = count_steps(job.store, job.source.run_id)
    if job.sessions is not None:
        counts = {k: n for k, n in counts.items() if k in job.sessions}
    repeats = job.opts.repeat
    job.progress.total = sum(counts.values()) * repeats
    done = finished_units(job.store, job.rec.run_id) if job.resuming else {}
    job.tick()
    steps = _StepReplay(job)
    # a batch of steps at a time: memory holds one batch of requests however long the run
    for chunk in iter_steps(job.store, job.source.run_id, batch=STEP_BATCH, sessions=job.sessions):
        asked = [s for s in chunk if not s.content_missing]
        job.progress.no_content += len(chunk) - len(asked)
        todo = []
        for unit in ((s, r) for s in asked for r in range(repeats)):
            key = (unit[0].session_id, unit[0].seq, unit[1])
            if key in done:
                _resumed(job, unit[0], unit[1], done[key])
            else:
                todo.append(unit)
        job.tick()
        await asyncio.gather(*(steps.one(unit) for unit in steps.prepare(todo)))
        steps.finished(chunk)
    for outcome in job.outcomes.values():
        if outcome.steps == 0 and outcome.resumed_steps:
            outcome.status = "resumed"
