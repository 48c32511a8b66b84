"""One replay of one source run: its options checked against the source (and the run being resumed),
its run created with the manifest that ``--resume`` reads, its mode run, its result made. The local
executor and each Ray shard run it alike."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.providers import resolve
from sdbctl.sdb.recording import Recorder, manifest_fields, new_run_id
from sdbctl.sdb.redaction import load_redactor, url_without_secrets
from sdbctl.sdb.replay._agent import check_simulator, choose_agent, no_agent
from sdbctl.sdb.replay._cache import ResponseCache
from sdbctl.sdb.replay._calling import Caller, in_flight
from sdbctl.sdb.replay._job import Job
from sdbctl.sdb.replay._limits import Limiter
from sdbctl.sdb.replay._options import RECORDED, Executor, ReplayOptions
from sdbctl.sdb.replay._results import ReplayProgress, ReplayResult, clock
from sdbctl.sdb.replay._session import replay_sessions
from sdbctl.sdb.replay._step import replay_steps
from sdbctl.sdb.store import RunWriter, Store


def _resumed(store: Store, resume: str, given: ReplayOptions) -> tuple[ReplayOptions, str]:
    """The options saved by the partial replay ``resume``, and its source run. What a store may not
    decide is taken from ``given``: the agent, code named as a model, a base URL's secret."""
    partial = store.manifest(resume)
    if partial.status == "complete":
        raise UsageError(f"run {resume!r} is complete; there is nothing to resume")
    saved = partial.meta.get("replay")
    if not saved or not partial.source_run:
        raise UsageError(f"run {resume!r} is not a replay run, so it cannot be resumed")
    model = str(saved.get("model") or "")
    if model.startswith("py:") and given.model != model:  # code named by a store: the user names it
        raise UsageError(
            f"run {resume!r} was replayed with {model}, code that sdbctl does not import from a store; "
            f"check it and pass --model {model} with --resume to run it"
        )
    base_url = given.base_url or saved.get("base_url")
    if base_url and "[REDACTED]" in base_url:
        raise UsageError(
            f"run {resume!r} was replayed against {base_url}; its secret is not stored: "
            "pass --base-url again with --resume"
        )
    prompts = dict(saved.get("prompts") or {})
    opts = ReplayOptions(**{**saved, "prompts": prompts, "run_id": resume, "agent": given.agent, "base_url": base_url})
    return opts, partial.source_run


class Replayer:
    """One replay of one source run (see the package docstring); refuses a bad one before any call."""

    def __init__(
        self,
        store: Store,
        source_run: str,
        opts: ReplayOptions,
        *,
        resume: str | None = None,
        shard: str | None = None,
        sessions: frozenset[str] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.store = store
        self.resume = resume
        self.on_progress: Callable[[ReplayProgress], None] | None = None
        # one shard of a distributed replay: these sessions only, into the open run ``opts.run_id``
        self.shard = shard
        self.sessions = sessions
        self.limiter = limiter
        if resume is not None:
            opts, source_run = _resumed(store, resume, opts)
        self.opts = opts
        self.source = store.manifest(source_run)
        self.source_run = self.source.run_id
        if self.source.status == "partial" and not opts.allow_partial:
            raise UsageError(
                f"run {self.source_run!r} is partial ({self.source.interrupted or 'its writer did not finish'}): "
                "a replay of half a run diffs as drift; complete it first, or pass --allow-partial"
            )
        self.workload = choose_agent(self.source.agent, opts.agent)
        agent_args = dict(self.source.meta.get("agent_args") or {})
        self.seed = opts.seed if opts.seed is not None else int(agent_args.get("seed") or 0)
        if opts.prompts:
            if self.workload is None:
                raise no_agent(self.source_run, self.source.agent, "--prompt needs the agent's prompt templates")
            for name, version in opts.prompts.items():
                self.workload.prompts.check(f"{name}@{version}")  # refused before any model call
        if opts.mode == "session" and self.workload is None:
            raise no_agent(self.source_run, self.source.agent, "--mode session runs the agent again")
        self.recorded = opts.model == RECORDED
        self.provider = (
            None if self.recorded else resolve(opts.model, {"base_url": opts.base_url} if opts.base_url else None)
        )
        check_simulator(opts.model, self.source_run, self.source.agent, self.workload)  # after resolve: typos first
        self.progress = ReplayProgress()
        self.redactor = load_redactor()

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
        return {
            "source_run": self.source_run,
            "model": opts.model,
            "mode": opts.mode,
            "repeat": opts.repeat,
            "agent": self.source.agent,
            "prompts": [f"{k}@{v}" for k, v in sorted(opts.prompts.items())],
            "replay": saved,
            "redaction": self.redactor.names,  # what ran on the answers (and the cache)
        }

    def create_run(self) -> RunWriter:
        """Create the replay's run (manifest ``partial``) for shards to write into; the caller closes it."""
        meta, fields = manifest_fields(self.manifest_meta())
        return RunWriter.create(self.store, self.opts.run_id or new_run_id(), recorder="replay", meta=meta, **fields)

    def run(self, on_progress: Callable[[ReplayProgress], None] | None = None) -> ReplayResult:
        """Run the replay to its end, telling ``on_progress`` the counters as they change; interrupted,
        the run stays ``partial`` and the error propagates."""
        started = clock()
        self.on_progress = on_progress
        opts = self.opts
        rec = Recorder(
            store=self.store,
            meta=self.manifest_meta() if self.shard is None else {},
            run_id=self.resume or opts.run_id,
            resume=self.resume is not None,
            recorder="replay",
            shard=self.shard,
            handle_signals=self.shard is None,
        )
        cache = ResponseCache(self.store.local_dir("cache")) if opts.cache and not self.recorded else None
        caller = None if self.provider is None else Caller(self.provider, opts, cache, self.progress, self.limiter)
        try:
            with rec:
                job = Job(
                    store=self.store,
                    source=self.source,
                    opts=opts,
                    seed=self.seed,
                    workload=self.workload,
                    caller=caller,
                    rec=rec,
                    truth=rec.side_file("truth.jsonl"),
                    progress=self.progress,
                    tick=self._tick,
                    in_flight=in_flight(opts, self.provider),
                    sessions=self.sessions,
                    resuming=self.resume is not None or self.shard is not None,
                )
                asyncio.run(self._main(job))
        finally:
            if cache is not None:
                cache.close()
        return ReplayResult.of(
            run_id=rec.run_id,
            opts=opts,
            source_run=self.source_run,
            status="complete",
            progress=self.progress,
            sessions=job.outcomes.values(),
            started=started,
        )

    async def _main(self, job: Job) -> None:
        try:
            await (replay_steps(job) if self.opts.mode == "step" else replay_sessions(job))
        finally:
            close = getattr(self.provider, "aclose", None)
            if close is not None:
                await close()  # the provider's HTTP client belongs to this event loop

    def _tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


@dataclass(frozen=True)
class PreparedReplay:
    """A replay checked and ready to run: :func:`prepare` has raised whatever refuses it (bad input,
    a missing run, an agent or a model that does not fit) before any progress bar or run exists."""

    replayer: Replayer  #: the replay, its options final (those saved, when resuming)
    executor: Executor  #: where it runs

    def run(self, on_progress: Callable[[ReplayProgress], None] | None = None) -> ReplayResult:
        """Run it, telling ``on_progress`` the counters as they change."""
        if self.executor.kind == "ray":
            from sdbctl.sdb.replay._ray import replay_on_ray

            return replay_on_ray(self.replayer, self.executor, on_progress=on_progress)
        return self.replayer.run(on_progress)


def prepare(
    store: Store | str | os.PathLike[str] | None,
    source_run: str | None,
    opts: ReplayOptions,
    *,
    resume: str | None = None,
    executor: Executor | None = None,
) -> PreparedReplay:
    """Check a replay of ``source_run`` (or the resumption of the partial replay ``resume``) in
    ``store`` (a store, or where to open one), to run here or, with ``Executor(kind="ray")``, on Ray."""
    if resume is None and not (source_run and opts.model):
        raise UsageError("replay needs RUN and --model (or --resume RUN_ID)")
    where = executor or Executor()
    if where.kind == "ray":
        from sdbctl.sdb.replay._ray import require_ray  # Ray is an optional extra

        require_ray()
    return PreparedReplay(Replayer(Store.open(store), source_run or "", opts, resume=resume), where)


def replay(
    store: Store | str | os.PathLike[str] | None,
    source_run: str | None,
    opts: ReplayOptions,
    *,
    resume: str | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
    executor: Executor | None = None,
) -> ReplayResult:
    """:func:`prepare` the replay and run it: the one call for callers with no progress bar to open."""
    return prepare(store, source_run, opts, resume=resume, executor=executor).run(on_progress)
