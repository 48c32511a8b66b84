"""The replay engine: ask recorded questions again under another model or prompt, and record the answers.

Two modes:

- ``step`` (default, needs no agent code): every recorded ``llm`` step is asked again with its
  recorded context (its prompt re-rendered from the recorded variables where a new version is
  given); the answer crosses the boundary rules (parse, validate, normalize, digest) and its actions
  are written with the source's session and step. Effects are never executed.
- ``session`` (closed loop): the agent named in the source manifest runs again on the recorded
  inputs; an action identical (same digest) to a recorded one gets the recorded effect, and so does a
  human question identical to a recorded one; at the first action with no recorded effect the session
  stops (or, with ``on_divergence="continue"``, goes on through handlers marked ``pure``).

Model calls are paced (concurrency, requests per minute), retried with backoff that honours
Retry-After, bounded by a timeout, and cached in the store. A provider error after the last retry is
an ``error`` event for that step, counted apart from divergence. Each step's events are written as
one unit, so an interrupted replay (``partial``) resumes without asking any finished step again.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from sdbctl.sdb.agents import AgentContext, Workload, load_agent, workload_names
from sdbctl.sdb.boundary import EXECUTE, Boundary, StopSession, ValidAction
from sdbctl.sdb.boundary.observe import write_actions
from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.events.canonical import canonical_bytes, digest
from sdbctl.sdb.providers import Completion, Provider, ProviderError, resolve
from sdbctl.sdb.recording import Recorder, Session, manifest_fields, new_run_id
from sdbctl.sdb.redaction import load_redactor, url_without_secrets
from sdbctl.sdb.replay.cache import ResponseCache, cache_key
from sdbctl.sdb.replay.limits import Limiter, RateLimiter, RetryPolicy, call_with_retries
from sdbctl.sdb.replay.source import SourceStep, count_steps, finished_units, iter_steps
from sdbctl.sdb.store.layout import Store
from sdbctl.sdb.store.views import connect, query_arrow
from sdbctl.sdb.store.writer import RunWriter

RECORDED = "recorded"
MODES = ("step", "session")


@dataclass(frozen=True)
class ReplayOptions:
    """Everything ``sdbctl replay`` can be told; keyword-only on purpose."""

    model: str
    prompts: Mapping[str, str] = field(default_factory=dict)
    mode: str = "step"
    repeat: int = 1
    concurrency: int = 8
    rpm: float | None = None
    timeout: float = 60.0
    retries: int = 5
    cache: bool = True
    on_divergence: str = "stop"
    base_url: str | None = None
    run_id: str | None = None
    seed: int | None = None
    allow_partial: bool = False  # replay a partial (interrupted) source run anyway
    agent: str | None = None  # the agent named on the command line (never taken from a store)

    def __post_init__(self) -> None:
        """Refuse counts and times no replay can mean, also when built from saved options (``--resume``,
        the Ray executor's workers): NaN passes no comparison, so each check says what is allowed."""
        counts = (("repeat", self.repeat, 1), ("concurrency", self.concurrency, 1), ("retries", self.retries, 0))
        for name, count, least in counts:
            if isinstance(count, bool) or not isinstance(count, int) or count < least:
                raise UsageError(f"--{name} must be a whole number >= {least}, not {count!r}")
        for name, number, optional in (("timeout", self.timeout, False), ("rpm", self.rpm, True)):
            if number is None and optional:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number < float("inf"):
                raise UsageError(f"--{name} must be a finite number > 0, not {number!r}")


@dataclass
class ReplayProgress:
    """Counters for the progress bar and the final summary."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    asked: int = 0
    cached: int = 0
    retried: int = 0
    errors: int = 0
    divergences: int = 0
    stopped_sessions: int = 0
    no_content: int = 0  # recorded without their messages (traces without content): not replayable
    first_errors: dict[str, str] = field(default_factory=dict)  # kind of provider error -> its first message

    def error(self, exc: ProviderError, message: str) -> None:
        self.errors += 1
        self.first_errors.setdefault(exc.kind, message)


@dataclass
class ReplayResult:
    run_id: str
    source_run: str
    mode: str
    model: str
    status: str
    seconds: float
    cpu_seconds: float
    progress: ReplayProgress

    def as_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "run_id": self.run_id,
            "source_run": self.source_run,
            "mode": self.mode,
            "model": self.model,
            "status": self.status,
            "steps": p.total,
            "steps_done": p.done,
            "resumed_steps": p.skipped,
            "model_calls": p.asked,
            "cache_hits": p.cached,
            "retries": p.retried,
            "errors": p.errors,
            "divergences": p.divergences,
            "stopped_sessions": p.stopped_sessions,
            "steps_without_content": p.no_content,
            "first_errors": dict(p.first_errors),
            "seconds": round(self.seconds, 3),
            "cpu_seconds_per_step": round(self.cpu_seconds / max(p.done, 1), 6),
        }


def _agent(manifest_agent: str | None, given: str | None) -> Workload | None:
    """The agent to run: the one named on the command line (``--agent``), else the source manifest's
    when it is a registered workload name. A path or module named by a manifest is never imported:
    stores travel (CI artifacts, shared buckets), and code would run from whoever wrote the store."""
    if given:
        return load_agent(given)
    if not manifest_agent or manifest_agent not in workload_names():
        return None
    try:
        return load_agent(manifest_agent)
    except SdbError:
        return None


def _check_simulator(model: str, run: str, agent: str | None, workload: Workload | None) -> None:
    """A simulator answers its own workload's questions only: ``sim:triage@v2`` on a renewal run would
    give nothing but parse failures, so it is refused, naming the simulators that fit."""
    if not model.startswith("sim:") or workload is None:
        return
    baseline = str(getattr(workload, "baseline_model", "") or "")
    if not baseline.startswith("sim:"):
        return
    family = baseline[4:].split("@", 1)[0]
    asked = model[4:].split("@", 1)[0]
    if asked != family:
        raise UsageError(
            f"run {run!r} is of agent {agent!r}, whose simulators are sim:{family}@vN (e.g. {baseline}); "
            f"{model} simulates another workload"
        )


def _no_agent(run: str, agent: str | None, needs: str) -> UsageError:
    if agent and agent not in workload_names():
        return UsageError(
            f"{needs}, and run {run!r} names agent {agent!r}, code that sdbctl does not import from a store; "
            f"check it and pass --agent {agent} to run it"
        )
    return UsageError(f"{needs}, and run {run!r} names no agent that can be loaded ({agent or 'none recorded'})")


class _Caller:
    """A provider wrapped with the cache, the rate limit, retries, the timeout and the counters."""

    def __init__(
        self,
        provider: Provider,
        opts: ReplayOptions,
        cache: ResponseCache | None,
        progress: ReplayProgress,
        limiter: Limiter | None = None,
    ) -> None:
        self.provider = provider
        self.opts = opts
        self.cache = cache
        self.progress = progress
        self.redactor = load_redactor()  # an answer is redacted before the cache or a run holds it
        self.limiter: Limiter = limiter or RateLimiter(opts.rpm)
        self.policy = RetryPolicy(attempts=max(1, opts.retries))
        self.spec = provider.spec

    async def ask(self, request: dict[str, Any], *, seed: int, repeat: int) -> Completion:
        cache = self.cache if self.opts.repeat == 1 else None  # repeats neither read nor write it
        key = cache_key(self.spec, request, seed) if cache is not None else ""
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                self.progress.cached += 1
                return Completion(self.redactor.redact(hit["response"]), truth=hit.get("truth"))

        def retried(attempt: int, error: ProviderError, pause: float) -> None:
            self.progress.retried += 1

        async def once() -> Completion:
            self.progress.asked += 1
            done = await self.provider.complete(request, seed=seed, repeat=repeat)
            done = replace(done, response=self.redactor.redact(done.response))
            # cached the moment it arrives, before this coroutine yields: a process killed later (a
            # Ray worker, a SIGKILL) loses no answer it was given, and a resumed run asks nothing twice
            if cache is not None:  # a simulator's ground truth is kept with its answer
                cache.put(key, {"response": done.response, "truth": done.truth})
            return done

        return await call_with_retries(
            once, policy=self.policy, limiter=self.limiter, timeout=self.opts.timeout, on_retry=retried
        )


def _without_model(request: Mapping[str, Any]) -> bytes:
    return canonical_bytes({k: v for k, v in request.items() if k != "model"})


class Replayer:
    """One replay of one source run (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        source_run: str,
        opts: ReplayOptions,
        *,
        resume: str | None = None,
        on_progress: Callable[[ReplayProgress], None] | None = None,
        shard: str | None = None,
        sessions: frozenset[str] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.store = store
        self.resume = resume
        self.on_progress = on_progress
        # one shard of a distributed replay: these sessions only, into the open run ``opts.run_id``
        self.shard = shard
        self.sessions = sessions
        self.limiter = limiter
        if resume is not None:
            partial = store.manifest(resume)
            if partial.status == "complete":
                raise UsageError(f"run {resume!r} is complete; there is nothing to resume")
            saved = partial.meta.get("replay")
            if not saved or not partial.source_run:
                raise UsageError(f"run {resume!r} is not a replay run, so it cannot be resumed")
            model = str(saved.get("model") or "")
            if model.startswith("py:") and opts.model != model:  # code named by a store: the user names it
                raise UsageError(
                    f"run {resume!r} was replayed with {model}, code that sdbctl does not import from a store; "
                    f"check it and pass --model {model} with --resume to run it"
                )
            base_url = opts.base_url or saved.get("base_url")
            if base_url and "[REDACTED]" in base_url:
                raise UsageError(
                    f"run {resume!r} was replayed against {base_url}; its secret is not stored: "
                    "pass --base-url again with --resume"
                )
            opts = ReplayOptions(
                **{
                    **saved,
                    "prompts": dict(saved.get("prompts") or {}),
                    "run_id": resume,
                    "agent": opts.agent,
                    "base_url": base_url,
                }
            )
            source_run = partial.source_run
        self.opts = opts
        self.source = store.manifest(source_run)
        self.source_run = self.source.run_id
        if self.source.status == "partial" and not opts.allow_partial:
            raise UsageError(
                f"run {self.source_run!r} is partial ({self.source.interrupted or 'its writer did not finish'}): "
                "a replay of half a run diffs as drift; complete it first, or pass --allow-partial"
            )
        if opts.mode not in MODES:
            raise UsageError(f"--mode must be step or session, not {opts.mode!r}")
        if opts.repeat < 1 or opts.concurrency < 1:
            raise UsageError("--repeat and --concurrency must be 1 or more")
        if opts.on_divergence not in ("stop", "continue"):
            raise UsageError("--on-divergence must be stop or continue")
        self.workload = _agent(self.source.agent, opts.agent)
        agent_args = dict(self.source.meta.get("agent_args") or {})
        self.seed = opts.seed if opts.seed is not None else int(agent_args.get("seed") or 0)
        if opts.prompts:
            if self.workload is None:
                raise _no_agent(self.source_run, self.source.agent, "--prompt needs the agent's prompt templates")
            for name, version in opts.prompts.items():
                self.workload.prompts.check(f"{name}@{version}")  # refused before any model call
        if opts.mode == "session" and self.workload is None:
            raise _no_agent(self.source_run, self.source.agent, "--mode session runs the agent again")
        self.recorded = opts.model == RECORDED
        self.provider = (
            None if self.recorded else resolve(opts.model, {"base_url": opts.base_url} if opts.base_url else None)
        )
        _check_simulator(opts.model, self.source_run, self.source.agent, self.workload)  # after resolve: typos first
        self.progress = ReplayProgress()
        self.redactor = load_redactor()

    def _in_flight(self) -> int:
        """Model calls in flight: ``--concurrency``, capped by a provider that answers fewer at once
        (``max_concurrency``: a local model answers as many as the cores), so that a call queued behind
        the model does not spend its ``--timeout`` waiting."""
        most = getattr(self.provider, "max_concurrency", None)
        return min(self.opts.concurrency, int(most)) if most else self.opts.concurrency

    # -- the run -------------------------------------------------------------------------------

    def manifest_meta(self) -> dict[str, Any]:
        """What the run's manifest says of this replay (``meta.replay`` is what ``--resume`` reads)."""
        opts = self.opts
        saved: dict[str, Any] = {
            "model": opts.model,
            "prompts": dict(opts.prompts),
            "mode": opts.mode,
            "repeat": opts.repeat,
            "concurrency": opts.concurrency,
            "rpm": opts.rpm,
            "timeout": opts.timeout,
            "retries": opts.retries,
            "cache": opts.cache,
            "on_divergence": opts.on_divergence,
            "base_url": url_without_secrets(opts.base_url),  # a password in it never reaches the manifest
            "seed": self.seed,
        }
        meta: dict[str, Any] = {
            "source_run": self.source_run,
            "model": opts.model,
            "mode": opts.mode,
            "repeat": opts.repeat,
            "agent": self.source.agent,
            "prompts": [f"{k}@{v}" for k, v in sorted(opts.prompts.items())],
            "replay": saved,
            "redaction": self.redactor.names,  # what ran on the answers (and the cache)
        }
        return meta

    def create_run(self) -> RunWriter:
        """Create the replay's run (manifest ``partial``) for shards to write into; the caller closes it."""
        meta, fields = manifest_fields(self.manifest_meta())
        return RunWriter.create(self.store, self.opts.run_id or new_run_id(), recorder="replay", meta=meta, **fields)

    def run(self) -> ReplayResult:
        started, cpu = time.perf_counter(), time.process_time()
        opts = self.opts
        meta = self.manifest_meta() if self.shard is None else {}
        rec = Recorder(
            store=self.store,
            meta=meta,
            run_id=self.resume or opts.run_id,
            resume=self.resume is not None,
            recorder="replay",
            shard=self.shard,
            handle_signals=self.shard is None,
        )
        cache = ResponseCache(self.store.local_dir("cache")) if opts.cache and not self.recorded else None
        status = "partial"
        try:
            with rec:
                self.truth = rec.side_file("truth.jsonl")
                asyncio.run(self._main(rec, cache))
                status = "complete"
        finally:
            if cache is not None:
                cache.close()
        return ReplayResult(
            rec.run_id,
            self.source_run,
            opts.mode,
            opts.model,
            status,
            time.perf_counter() - started,
            time.process_time() - cpu,
            self.progress,
        )

    async def _main(self, rec: Recorder, cache: ResponseCache | None) -> None:
        try:
            if self.opts.mode == "step":
                await self._steps(rec, cache)
            else:
                await self._sessions(rec, cache)
        finally:
            close = getattr(self.provider, "aclose", None)
            if close is not None:
                await close()  # the provider's HTTP client belongs to this event loop

    def _caller(self, cache: ResponseCache | None) -> _Caller | None:
        if self.provider is None:
            return None
        return _Caller(self.provider, self.opts, cache, self.progress, self.limiter)

    def _tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)

    # -- step mode -----------------------------------------------------------------------------

    def _request(self, step: SourceStep) -> tuple[dict[str, Any], str | None]:
        """The step's request, its prompt re-rendered where a new version was asked for."""
        request = dict(step.request)
        prompt = step.prompt
        if prompt and self.opts.prompts and self.workload is not None:
            name = prompt.partition("@")[0]
            version = self.opts.prompts.get(name)
            if version is not None and prompt != f"{name}@{version}":
                if step.variables is None:
                    raise UsageError(f"step {step.session_id}#{step.seq}: no recorded variables to re-render {prompt}")
                old = self.workload.prompts.render(prompt, step.variables)
                new = self.workload.prompts.render(f"{name}@{version}", step.variables)
                request["messages"] = new + list(request.get("messages", []))[len(old) :]
                prompt = f"{name}@{version}"
        if self.provider is not None and "model" in request:
            request["model"] = self.provider.spec
        return request, prompt

    def _boundary(self) -> Boundary:
        replay_boundary = getattr(self.workload, "replay_boundary", None)
        return replay_boundary() if callable(replay_boundary) else Boundary("replay", open_vocabulary=True)

    async def _steps(self, rec: Recorder, cache: ResponseCache | None) -> None:
        counts, _ = count_steps(self.store, self.source_run)
        if self.sessions is not None:
            counts = {k: n for k, n in counts.items() if k in self.sessions}
        self.progress.total = sum(counts.values()) * self.opts.repeat
        done = finished_units(self.store, rec.run_id) if self.resume or self.shard else set()
        self._tick()
        boundary = self._boundary()
        caller = self._caller(cache)
        gate = asyncio.Semaphore(self._in_flight())
        sessions: dict[str, Session] = {}

        async def one(step: SourceStep, repeat: int) -> None:
            async with gate:
                request, prompt = self._request(step)
                mark = {"source_seq": step.seq, "repeat": repeat}
                sink = sessions.setdefault(step.session_id, rec.session(step.session_id))
                where: dict[str, Any] = {"step": step.step, "actor": step.actor, "pattern": step.pattern}
                completion: Completion | None = None
                error: ProviderError | None = None
                if caller is None:
                    completion = Completion(
                        step.response if isinstance(step.response, dict) else {"content": step.response}
                    )
                else:
                    try:
                        completion = await caller.ask(request, seed=self.seed, repeat=repeat)
                    except ProviderError as exc:
                        error = exc
                with rec.unit():
                    if completion is None:
                        assert error is not None
                        message = self.redactor.text(str(error))
                        sink.error(
                            "provider",
                            message,
                            detail={"status": error.status, "kind": error.kind},
                            replay=mark,
                            **where,
                        )
                        self.progress.error(error, message)
                    else:
                        model = step.model if caller is None else caller.spec
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
                        digests = write_actions(sink.action, boundary, completion.response, seq, where)
                        if tuple(digests) != step.actions:
                            self.progress.divergences += 1
                        if completion.truth is not None:
                            self.truth(
                                {
                                    "session_id": step.session_id,
                                    "step": step.step,
                                    "llm_seq": seq,
                                    "source_seq": step.seq,
                                    "repeat": repeat,
                                    **completion.truth,
                                }
                            )
                self.progress.done += 1
                self._tick()

        # a batch of steps at a time: memory holds one batch of requests however long the run
        for chunk in iter_steps(self.store, self.source_run, sessions=self.sessions):
            steps = [s for s in chunk if not s.content_missing]
            self.progress.no_content += len(chunk) - len(steps)
            units = [(s, r) for s in steps for r in range(self.opts.repeat)]
            todo = [(s, r) for s, r in units if (s.session_id, s.seq, r) not in done]
            self.progress.skipped += len(units) - len(todo)
            self.progress.done += len(units) - len(todo)
            self._tick()
            await asyncio.gather(*(one(s, r) for s, r in todo))

    # -- session mode --------------------------------------------------------------------------

    def _recorded_session(self) -> dict[str, dict[str, Any]]:
        """Per session: recorded answers by request, effects by action digest, human answers by question."""
        con = connect(self.store, self.source_run)
        rows = query_arrow(
            con,
            "SELECT session_id, seq, kind, name, parent, digest, payload FROM events "
            "WHERE kind IN ('llm', 'action', 'effect', 'input') ORDER BY session_id, seq",
        )
        book: dict[str, dict[str, Any]] = defaultdict(
            lambda: {
                "answers": defaultdict(deque),
                "effects": defaultdict(deque),
                "humans": defaultdict(deque),
                "actions": [],
                "digest_of": {},
            }
        )
        for row in rows.to_pylist():
            entry = book[row["session_id"]]
            body = orjson.loads(row["payload"])
            if row["kind"] == "llm":
                entry["answers"][_without_model(body.get("request") or {})].append(body.get("response"))
            elif row["kind"] == "action":
                entry["digest_of"][row["seq"]] = int(row["digest"])
                entry["actions"].append(int(row["digest"]))
            elif row["kind"] == "effect" and row["parent"] in entry["digest_of"]:
                entry["effects"][entry["digest_of"][row["parent"]]].append(body.get("result"))
            elif row["kind"] == "input" and row["name"] == "human_decision":
                entry["humans"][canonical_bytes(body.get("question"))].append(body.get("answer"))
        return book

    async def _sessions(self, rec: Recorder, cache: ResponseCache | None) -> None:
        assert self.workload is not None
        workload = self.workload
        args = dict(self.source.meta.get("agent_args") or {})
        options = workload.options(dict(args.get("options") or {}))
        prompts = {**dict(args.get("prompts") or {}), **dict(self.opts.prompts)}
        con = connect(self.store, self.source_run)
        source_ids = query_arrow(con, "SELECT DISTINCT session_id FROM events").column("session_id").to_pylist()
        wanted = set(source_ids)
        if self.sessions is not None:
            wanted &= self.sessions
        # as many as the recording had: a workload may make more sessions than its data has rows
        items = [i for i in workload.sessions(len(source_ids), self.seed, options) if i.session_id in wanted]
        done_sessions: set[str] = set()
        if self.resume or self.shard:
            finished = query_arrow(
                connect(self.store, rec.run_id),
                "SELECT DISTINCT session_id FROM events WHERE kind = 'state' AND name = 'replay:finished'",
            ).to_pylist()
            done_sessions = {r["session_id"] for r in finished}
        units = [(i, r) for i in items for r in range(self.opts.repeat)]
        todo = [(i, r) for i, r in units if _replayed_id(i.session_id, r) not in done_sessions]
        self.progress.total = len(units)
        self.progress.skipped = self.progress.done = len(units) - len(todo)
        self._tick()
        book = self._recorded_session()
        caller = self._caller(cache)
        gate = asyncio.Semaphore(self._in_flight())

        async def one(item: Any, repeat: int) -> None:
            async with gate:
                entry = book[item.session_id]
                answers = {k: deque(v) for k, v in entry["answers"].items()}
                effects = {k: deque(v) for k, v in entry["effects"].items()}
                humans = {k: deque(v) for k, v in entry["humans"].items()}
                # a session's events are buffered and written as one unit at its end, so an interrupted
                # replay leaves no half session behind and --resume runs it again from the start
                sink = _Buffer(_replayed_id(item.session_id, repeat))

                def serve(valid: ValidAction) -> Any:
                    queue = effects.get(valid.digest)
                    if queue:
                        return queue.popleft()
                    if self.opts.on_divergence == "continue" and valid.pure:
                        return EXECUTE
                    raise StopSession(f"no recorded effect for {valid.name} (digest {valid.digest:016x})")

                def humans_for(decider: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
                    def recorded(question: Mapping[str, Any]) -> Any:
                        queue = humans.get(canonical_bytes(dict(question)))
                        if queue:
                            return queue.popleft()
                        raise StopSession("this question was never put to a human in the recorded run")

                    return recorded

                provider: Provider = _SessionProvider(answers, caller, self.seed, repeat)
                ctx = AgentContext(
                    sink=sink,
                    model=provider,
                    prompts=workload.prompts,
                    seed=self.seed,
                    repeat=repeat,
                    prompt_versions=prompts,
                    options=options,
                    truth=self.truth,
                    commit=serve,
                    humans=humans_for,
                )
                try:
                    terminal = await workload.run_session(ctx, item)
                    sink.state("replay:finished", {"terminal": terminal})
                except StopSession as stop:
                    self.progress.stopped_sessions += 1
                    sink.gate("replay", "stop", str(stop), status="gated")
                    sink.state("replay:finished", {"terminal": None, "stopped": str(stop)})
                except ProviderError as exc:
                    self.progress.error(exc, str(exc))
                    sink.error("provider", str(exc), detail={"status": exc.status, "kind": exc.kind})
                    sink.state("replay:finished", {"terminal": None, "error": str(exc)})
                with rec.unit():
                    sink.write_to(rec.session(sink.session_id))
                if sink.digests != entry["actions"]:
                    self.progress.divergences += 1
                self.progress.done += 1
                self._tick()

        await asyncio.gather(*(one(i, r) for i, r in todo))


def _replayed_id(session_id: str, repeat: int) -> str:
    """The session id of a session-mode replay: the source's, with ``#rK`` for repeat K >= 1."""
    return session_id if repeat == 0 else f"{session_id}#r{repeat}"


class _Buffer:
    """A session sink that keeps its events until :meth:`write_to`, and the digests of its actions.

    Arguments are copied when recorded, as the recorder serialises them when called."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.digests: list[int] = []

    def _keep(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        self.calls.append((method, copy.deepcopy(args), copy.deepcopy(kwargs)))
        return len(self.calls) - 1

    def input(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("input", args, kwargs)

    def llm(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("llm", args, kwargs)

    def action(self, name: str, args: Any, **kwargs: Any) -> int:
        self.digests.append(digest(name, canonical_bytes(args)))
        return self._keep("action", (name, args), kwargs)

    def gate(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("gate", args, kwargs)

    def effect(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("effect", args, kwargs)

    def state(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("state", args, kwargs)

    def error(self, *args: Any, **kwargs: Any) -> int:
        return self._keep("error", args, kwargs)

    def write_to(self, session: Session) -> None:
        for method, args, kwargs in self.calls:
            getattr(session, method)(*args, **kwargs)


class _SessionProvider:
    """The model as one replayed session sees it: the recorded answers (``recorded``), or the real
    provider through the engine's cache, limits and retries."""

    def __init__(self, answers: dict[bytes, deque[Any]], caller: _Caller | None, seed: int, repeat: int) -> None:
        self.answers = answers
        self.caller = caller
        self.seed = seed
        self.repeat = repeat
        self.spec = caller.spec if caller is not None else RECORDED

    async def complete(self, request: dict[str, Any], *, seed: int = 0, repeat: int = 0) -> Completion:
        if self.caller is not None:
            return await self.caller.ask(request, seed=self.seed, repeat=self.repeat)
        queue = self.answers.get(_without_model(request))
        if not queue:
            raise StopSession("the agent asked a question the recorded run never asked")
        return Completion(queue.popleft())


def replay(
    store: Store,
    source_run: str,
    opts: ReplayOptions,
    *,
    resume: str | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
) -> ReplayResult:
    """Replay ``source_run`` (or resume the partial replay ``resume``) and return the result."""
    return Replayer(store, source_run, opts, resume=resume, on_progress=on_progress).run()
