"""One replay of one source run: its options checked against the source (and the run being resumed),
its run created with the manifest that ``--resume`` reads, its mode run, its result made. The local
executor and each Ray shard run it alike."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sdbctl.sdb.boundary import load_actions_setting
from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.providers import resolve
from sdbctl.sdb.recording import Recorder, manifest_fields, new_run_id
from sdbctl.sdb.redaction import load_redactor, url_without_secrets
from sdbctl.sdb.replay._agent import check_simulator, choose_agent, no_agent
from sdbctl.sdb.replay._cache import CacheError, ResponseCache, cache_path, check_cache
from sdbctl.sdb.replay._calling import Caller, in_flight
from sdbctl.sdb.replay._job import Job
from sdbctl.sdb.replay._limits import Limiter
from sdbctl.sdb.replay._options import RECORDED, Executor, ReplayOptions
from sdbctl.sdb.replay._results import ReplayProgress, ReplayResult, clock
from sdbctl.sdb.replay._session import replay_sessions
from sdbctl.sdb.replay._step import replay_steps
from sdbctl.sdb.store import RunWriter, Store

#: saved options that say what the run is (its answers depend on them): a resume reads them, and a
#: value given on the command line that differs is refused
_RUN_OPTIONS = {
    "mode": "--mode",
    "repeat": "--repeat",
    "prompts": "--prompt",
    "seed": "seed",
    "on_divergence": "--on-divergence",
}
#: saved options of how it was asked: a resume reads them unless the command line gives them
_PACING = ("concurrency", "rpm", "timeout", "retries", "cache")


def _shown(value: object) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k}@{v}" for k, v in sorted(value.items())) or "(none)"
    return "(none)" if value is None or value == "" else str(value)


def _differs(flag: str, given: object, resume: str, stored: object, then: str) -> UsageError:
    return UsageError(f"{flag} {_shown(given)} differs from run {resume!r}, replayed with {_shown(stored)}: {then}")


def _passed(given: ReplayOptions) -> set[str]:
    """The options an API caller set: those that differ from their defaults."""
    default = ReplayOptions(model="")
    return {f.name for f in fields(ReplayOptions) if getattr(given, f.name) != getattr(default, f.name)}


def _resumed(
    store: Store, resume: str, given: ReplayOptions, source_run: str, passed: Collection[str] | None
) -> tuple[ReplayOptions, str]:
    """The options of the partial replay ``resume``, and its source run. A store is data, never
    configuration: the model and its base URL (where a credential goes, the file a local model loads)
    come from ``given`` only, and must be the run's; so must what the run is (mode, repeat, prompt
    versions, seed); the agent is ``given``'s; how it is paced is ``given``'s where set, else the run's."""
    partial = store.manifest(resume)
    if partial.status == "complete":
        raise UsageError(f"run {resume!r} is complete; there is nothing to resume")
    saved = partial.meta.get("replay")
    if not isinstance(saved, Mapping) or not partial.source_run:
        raise UsageError(f"run {resume!r} is not a replay run, so it cannot be resumed")
    given_set = set(_passed(given) if passed is None else passed)
    model, url = saved.get("model"), saved.get("base_url")
    named = f"--model {_shown(model)}" + (f" --base-url {_shown(url)}" if url else "")
    if not given.model:
        raise UsageError(
            f"run {resume!r} was replayed with {named}: pass it with --resume "
            "(the model and where requests go are never taken from a store)"
        )
    if given.model != model:
        raise _differs("--model", given.model, resume, model, "resume it with that model, or replay anew")
    if (url_without_secrets(given.base_url) or None) != (url or None):
        then = "resume it against the server it was replayed with, or replay anew"
        raise _differs("--base-url", url_without_secrets(given.base_url), resume, url, then)
    named_run = store.manifest(source_run).run_id if source_run else partial.source_run
    if named_run != partial.source_run:
        raise UsageError(f"RUN {named_run} differs from run {resume!r}, a replay of {partial.source_run}")
    if given.run_id and given.run_id != partial.run_id:
        raise UsageError(f"--run-id {given.run_id} differs from the run being resumed, {partial.run_id}")
    values: dict[str, Any] = {}
    for name, flag in _RUN_OPTIONS.items():
        stored = saved.get(name, getattr(ReplayOptions(model=""), name))
        if name == "prompts":
            ok = isinstance(stored, Mapping) and all(isinstance(x, str) for kv in stored.items() for x in kv)
            if not ok:
                raise UsageError(f"run {resume!r}: its run.json's meta.replay.prompts is not NAME -> VERSION")
            stored = dict(stored)
        if name in given_set and getattr(given, name) != stored:
            raise _differs(flag, getattr(given, name), resume, stored, "a resume completes the run as it began")
        values[name] = stored
    if values["seed"] is not None and (isinstance(values["seed"], bool) or not isinstance(values["seed"], int)):
        raise UsageError(f"run {resume!r}: its run.json's meta.replay.seed is not a whole number")
    for name in _PACING:
        values[name] = getattr(given, name) if name in given_set else saved.get(name, getattr(given, name))
    if not isinstance(values["cache"], bool):
        raise UsageError(f"run {resume!r}: its run.json's meta.replay.cache is not true or false")
    opts = replace(given, **values, run_id=resume)  # refused by ReplayOptions when a saved value is bad
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
        passed: Collection[str] | None = None,
        cache_file: Path | None = None,
    ) -> None:
        self.store = store
        self.resume = resume
        self.on_progress: Callable[[ReplayProgress], None] | None = None
        # one shard of a distributed replay: these sessions only, into the open run ``opts.run_id``
        self.shard = shard
        self.sessions = sessions
        self.limiter = limiter
        if resume is not None:  # ``passed``: the options the command line set (None: those not default)
            opts, source_run = _resumed(store, resume, opts, source_run, passed)
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
        # this machine's, never the store's (see sdb.replay._cache); a Ray shard is handed the driver's
        self.cache_path = cache_file or cache_path(store)
        if opts.cache and not self.recorded:  # a damaged cache is refused before the run is created
            check_cache(self.cache_path, read_only=False)
        if opts.cache_from is not None:
            check_cache(Path(opts.cache_from), read_only=True)
        self.progress = ReplayProgress()
        self.redactor = load_redactor()
        load_actions_setting()  # a malformed [boundary] table is refused before the run is created

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
        caches: list[ResponseCache] = []
        try:
            with rec:
                if self.provider is not None and opts.cache:
                    caches.append(ResponseCache(self.cache_path))
                    if opts.cache_from is not None:
                        caches.append(ResponseCache(Path(opts.cache_from), read_only=True))
                caller = None
                if self.provider is not None:
                    cache, source = caches[0] if caches else None, caches[1] if caches[1:] else None
                    caller = Caller(self.provider, opts, cache, self.progress, self.limiter, source)
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
        except CacheError as exc:  # one line: the cache it names, and the run it leaves partial
            raise CacheError(
                f"{exc}; run {rec.run_id!r} is left partial: --resume it with --model {opts.model}"
            ) from None
        finally:
            for each in caches:
                each.close()
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
    passed: Collection[str] | None = None,
) -> PreparedReplay:
    """Check a replay of ``source_run`` (or the resumption of the partial replay ``resume``) in
    ``store`` (a store, or where to open one), to run here or, with ``Executor(kind="ray")``, on Ray.
    ``passed`` names the fields of ``opts`` the user set (the CLI knows; None: those not default): with
    ``resume``, one that differs from the run's is refused."""
    if resume is None and not (source_run and opts.model):
        raise UsageError("replay needs RUN and --model (or --resume RUN_ID)")
    where = executor or Executor()
    if where.kind == "ray":
        from sdbctl.sdb.replay._ray import require_ray  # Ray is an optional extra

        require_ray()
    return PreparedReplay(Replayer(Store.open(store), source_run or "", opts, resume=resume, passed=passed), where)


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
