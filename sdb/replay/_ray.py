"""``sdbctl replay --executor ray``: a replay's sessions sharded across Ray workers.

The driver creates (or reopens, for ``--resume``) the run and owns its manifest. Each shard is a Ray
task that runs the ordinary engine over its sessions and writes its own Parquet parts
(``events-<shard>-NNNNN.parquet``) into the same store, so results are the local executor's, step for
step. A task killed with its worker is retried by Ray; the retry skips every step already in the store
and finds the answers it had not yet written in the response cache, so no step is lost or asked twice.
One Ray actor spaces model calls for all workers (``--rpm`` is global), another collects progress for
the driver's bar. The manifest is written last, from the parts.

Ray is an optional extra (``pip install 'sdbctl[ray]'``). Workers must be able to import sdbctl and
the agent's code, and reach the store: a local store only works on one machine (``ray.init`` here);
for a cluster use an ``s3://`` store.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.replay._limits import RateLimiter
from sdbctl.sdb.replay._options import Executor, ReplayOptions
from sdbctl.sdb.replay._results import ReplayProgress, ReplayResult, SessionOutcome, clock
from sdbctl.sdb.replay._run import Replayer
from sdbctl.sdb.replay._source import count_steps
from sdbctl.sdb.store import RunStatus, RunWriter, Store, connect, query_arrow

# passed to the workers: where the store is, the keys their model clients need, how to reach S3
_ENV_PREFIXES = ("SDB_", "AWS_", "OPENAI_", "ANTHROPIC_", "XDG_CACHE_HOME", "HOME")


def require_ray() -> Any:
    """The ray module, or the refusal that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'sdbctl[ray]'") from None
    return ray


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


def _shards(sessions: list[str], weights: dict[str, int], count: int) -> list[list[str]]:
    """Sessions in ``count`` shards of about equal work (heaviest first onto the lightest shard)."""
    shards: list[list[str]] = [[] for _ in range(max(1, min(count, len(sessions))))]
    load = [0] * len(shards)
    for session in sorted(sessions, key=lambda s: (-weights.get(s, 1), s)):
        i = load.index(min(load))
        shards[i].append(session)
        load[i] += weights.get(session, 1)
    return [sorted(s) for s in shards if s]


def run_shard(
    store_spec: str,
    source_run: str,
    opts: dict[str, Any],
    shard: str,
    sessions: list[str],
    cwd: str,
    setup: tuple[str, ...],
    limiter: Any,
    progress: Any,
    cache_file: str,
) -> dict[str, Any]:
    """One shard, in a Ray worker: the engine over ``sessions``, parts written as ``shard``; returns
    its counters (``progress``) and its sessions' outcomes (``sessions``). ``cache_file`` is the
    driver's response cache, so that a retried shard or a resume finds the answers already given."""
    if os.path.isdir(cwd):
        os.chdir(cwd)  # a local store path, and user agents named MODULE:ATTR, are relative to it
    for ref in setup:  # what the driver's command registered (model specs, workloads)
        module, _, name = ref.partition(":")
        getattr(importlib.import_module(module), name)()
    last = [0.0]

    def report(p: ReplayProgress) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2 or p.done == p.total:
            last[0] = now
            progress.report.remote(shard, asdict(p))

    options = ReplayOptions(**opts)
    shared = _SharedLimiter(limiter) if options.rpm else None
    replayer = Replayer(
        Store.open(store_spec),
        source_run,
        options,
        shard=shard,
        sessions=frozenset(sessions),
        limiter=shared,
        cache_file=Path(cache_file),
    )
    result = replayer.run(report)
    progress.report.remote(shard, asdict(replayer.progress))
    return {"progress": asdict(replayer.progress), "sessions": [asdict(s) for s in result.sessions]}


class _SharedLimiter:
    """The engine's limiter interface over the driver's rate-limit actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def wait(self) -> None:
        pause = await self.actor.reserve.remote()
        if pause > 0:
            await asyncio.sleep(pause)


class _Progress:
    """The latest counters of every shard (a Ray actor); the driver sums them."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}

    def report(self, shard: str, counters: dict[str, Any]) -> None:
        self.shards[shard] = counters

    def totals(self) -> dict[str, Any]:
        return _summed(self.shards.values())


def _store_spec(store: Store) -> str:
    """The store as workers must name it: an absolute directory, or the s3:// URI."""
    return store.uri if store.loc.remote else store.loc.base


def replay_on_ray(
    driver: Replayer, executor: Executor, *, on_progress: Callable[[ReplayProgress], None] | None = None
) -> ReplayResult:
    """Run ``driver``'s replay (checked as the local executor checks it) with its sessions sharded over
    Ray workers; the executor's ``setup`` callables register in each worker what the command did."""
    ray = require_ray()
    started = clock()
    store, resume, opts, source_run = driver.store, driver.resume, driver.opts, driver.source_run
    saved = {f.name: getattr(opts, f.name) for f in fields(ReplayOptions)}
    sessions, weights = _source_sessions(store, source_run, opts.mode)
    # Ray prints worker deaths and its own notices on stdout: they go to stderr, stdout stays the
    # command's (its --json)
    with contextlib.redirect_stdout(sys.stderr):
        started_ray = _connect(ray, executor.address, executor.workers)  # before the run: a bad address leaves none
        try:
            # the run exists (manifest partial) before any shard attaches to it; the driver holds its
            # writer, and so its lock, until the manifest is written last
            writer = RunWriter.reopen(store, resume) if resume is not None else driver.create_run()
            run_id = saved["run_id"] = writer.run_id
            work = (sessions, weights)
            status, results = _run_shards(
                ray, writer, source_run, saved, work, executor, on_progress, driver.cache_path
            )
        finally:
            if started_ray:
                ray.shutdown()
    return ReplayResult.of(
        run_id=run_id,
        opts=opts,
        source_run=source_run,
        status=status,
        progress=_as_progress(_summed(r["progress"] for r in results)),
        sessions=[SessionOutcome(**s) for r in results for s in r["sessions"]],
        started=started,
    )


def _run_shards(
    ray: Any,
    writer: RunWriter,
    source_run: str,
    saved: dict[str, Any],
    work: tuple[list[str], dict[str, int]],
    executor: Executor,
    on_progress: Callable[[ReplayProgress], None] | None,
    cache_file: Path,
) -> tuple[RunStatus, list[dict[str, Any]]]:
    """Run every shard over ``work`` (the sessions and their weights), then publish the manifest; the
    run's status and what each shard returned."""
    store, run_id = writer.store, saved["run_id"]
    sessions, weights = work
    count = executor.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    limiter = ray.remote(RateLimiter).options(num_cpus=0).remote(saved["rpm"])  # one, for every worker
    progress = ray.remote(_Progress).options(num_cpus=0).remote()
    task = ray.remote(run_shard).options(max_retries=3, retry_exceptions=False, num_cpus=1)
    shards = _shards(sessions, weights, count * 2)
    pending = [
        task.remote(
            _store_spec(store),
            source_run,
            saved,
            f"w{i}",
            shard,
            os.getcwd(),
            executor.setup,
            limiter,
            progress,
            str(cache_file),
        )
        for i, shard in enumerate(shards)
    ]
    status: RunStatus = "partial"
    results: list[dict[str, Any]] = []
    try:
        waiting = list(pending)
        while waiting:
            _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0.25)
            if on_progress is not None:
                on_progress(_as_progress(ray.get(progress.totals.remote())))
        results = ray.get(pending)  # raises what a shard raised
        status = "complete"
    except ray.exceptions.RayError as exc:
        raise SdbError(
            f"replay {run_id}: a Ray shard failed ({_first_line(exc)}); resume with --resume {run_id} "
            f"--model {saved['model']}" + (" and the --base-url you gave" if saved.get("base_url") else "")
        ) from None
    finally:
        try:
            writer.refresh()  # the parts the shards published: counted and checksummed from the files
        finally:
            writer.close(status)  # the manifest, last; the lock is released
    return status, results


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Join the cluster at ``address``, or start Ray on this machine; True when this call started it."""
    if ray.is_initialized():
        return False
    init: dict[str, Any] = {
        "address": address,
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "runtime_env": {"env_vars": _worker_env()},
    }
    if address is None and workers:
        init["num_cpus"] = workers
    try:
        ray.init(**init)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SdbError(f"--executor ray: cannot start or join Ray at {address or 'this machine'} ({exc})") from None
    return True


def _summed(shards: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The shards' counters added up, key by key; the first error of each kind, from whichever shard."""
    out: dict[str, Any] = {}
    first: dict[str, str] = {}
    for counters in shards:
        for key, value in counters.items():
            if key == "first_errors":
                for kind, message in (value or {}).items():
                    first.setdefault(kind, message)
            else:
                out[key] = out.get(key, 0) + int(value)
    out["first_errors"] = first
    return out


def _as_progress(totals: dict[str, Any]) -> ReplayProgress:
    known = {f.name for f in fields(ReplayProgress)}
    return ReplayProgress(**{k: v for k, v in totals.items() if k in known})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _source_sessions(store: Store, source_run: str, mode: str) -> tuple[list[str], dict[str, int]]:
    """The sessions to shard, and how many model steps each has (the work it stands for)."""
    if mode == "step":
        weights, _ = count_steps(store, source_run)
        return sorted(weights), weights
    rows = query_arrow(connect(store, source_run), "SELECT session_id, count(*) AS n FROM events GROUP BY 1")
    found = {str(r["session_id"]): int(r["n"]) for r in rows.to_pylist()}
    return sorted(found), found
