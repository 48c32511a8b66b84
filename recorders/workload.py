"""Recording a workload: run its episodes against a model, through the SDK recorder, into a new run.

The run manifest names the agent reference and its arguments (model, sessions, seed, options), so
that a later session-mode replay can run the same agent again on the same inputs. Simulators'
ground truth goes to the run's ``truth.jsonl`` side file, never into the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdbctl.recorders.sdk import Recorder
from sdbctl.sdb.agents import AgentContext, Workload, check_simulator
from sdbctl.sdb.errors import Interrupted, SdbError, UsageError
from sdbctl.sdb.providers import ProviderError, resolve


@dataclass
class RecordSummary:
    """What a recording produced."""

    run_id: str
    sessions: int
    events: int
    seconds: float
    terminal_states: dict[str, int] = field(default_factory=dict)  #: sessions per terminal state, by name


def workload_meta(workload: Workload) -> dict[str, Any]:
    """What the differ needs to know of a workload, for the manifest: its read-only (``pure``) actions
    and its success states (a session's outcome)."""
    meta: dict[str, Any] = {}
    make = getattr(workload, "replay_boundary", None)
    if callable(make):
        boundary = make()
        meta["actions"] = {
            "read_only": sorted(n for n, spec in boundary.actions.items() if spec.pure),
            "critical": sorted(n for n, spec in boundary.actions.items() if spec.critical),
        }
    success = getattr(workload, "success_states", None)
    if success:
        meta["outcome"] = {"success": list(success)}
    return meta


def check_sessions(sessions: int | None) -> None:
    """``--sessions`` of a recording (``record`` and the demo, which records first): 1 or more, or None
    for every episode the workload has. Checked before anything runs, so a refusal leaves no run."""
    if sessions is not None and sessions < 1:
        raise UsageError(f"--sessions must be 1 or more, not {sessions}")


@contextlib.contextmanager
def _interruption_said(rec: Recorder, sessions: int | None, finished: Counter[str]) -> Iterator[None]:
    """Ctrl-C, once the recorder has closed the run partial: :class:`Interrupted`, naming the run and
    what to do with it (a recording cannot be resumed)."""
    try:
        yield
    except KeyboardInterrupt:
        done = f"{sum(finished.values())}/{sessions if sessions is not None else 'all'}"
        raise Interrupted(
            f"run {rec.run_id} is left partial ({done} sessions recorded)",
            "a recording cannot be resumed: record again, and remove this one with",
            ("rm", rec.run_id),
        ) from None


def record_workload(
    workload: Workload,
    agent_ref: str,
    *,
    model: str | None = None,
    sessions: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    prompts: Mapping[str, str] | None = None,
    store: str | None = None,
    run_id: str | None = None,
    concurrency: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> RecordSummary:
    """Record ``sessions`` episodes of ``workload`` (all when None); ``progress(done, total)`` per episode.
    Ctrl-C raises :class:`Interrupted`, naming the run it left partial."""
    check_sessions(sessions)
    spec = model or workload.baseline_model
    provider = resolve(spec)
    check_simulator(spec, workload, "the recording")  # after resolve: typos first
    opts = workload.options(dict(options or {}))
    for name, version in (prompts or {}).items():
        workload.prompts.check(f"{name}@{version}")
    items = workload.sessions(sessions, seed, opts)
    meta = {
        "agent": agent_ref,
        "model": spec,
        "mode": "record",
        "agent_args": {
            "model": spec,
            "sessions": sessions,
            "seed": seed,
            "options": opts,
            "prompts": dict(prompts or {}),
        },
        "workload": workload.name,
        **workload_meta(workload),
    }
    started = time.perf_counter()
    terminal: Counter[str] = Counter()
    rec = Recorder(store=store, meta=meta, run_id=run_id)
    with _interruption_said(rec, sessions, terminal), rec:  # the run closed first, then said
        truth = rec.side_file("truth.jsonl")

        async def one(item: Any) -> str:
            ctx = AgentContext(
                sink=rec.session(item.session_id),
                model=provider,
                prompts=workload.prompts,
                seed=seed,
                prompt_versions=dict(prompts or {}),
                options=opts,
                truth=truth,
            )
            return await workload.run_session(ctx, item)

        async def main() -> int:
            """Episodes are taken from the workload as they are needed, ``concurrency`` at a time, so
            memory holds the episodes in flight, not all of them; the first failure cancels the rest
            and is raised once (no stream of unretrieved task exceptions)."""
            limit, done = max(1, concurrency), 0
            running: set[asyncio.Future[str]] = set()

            def finish(finished: set[asyncio.Future[str]]) -> None:
                nonlocal done
                failed = [t.exception() for t in finished if not t.cancelled() and t.exception() is not None]
                if failed:  # every exception is retrieved here; the first is raised
                    raise failed[0]  # type: ignore[misc]
                for task in finished:
                    terminal[task.result()] += 1
                    done += 1
                    if progress is not None:
                        progress(done, sessions if sessions is not None else done)

            try:
                for item in items:
                    if len(running) >= limit:
                        finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                        finish(finished)
                    running.add(asyncio.ensure_future(one(item)))
                while running:
                    finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    finish(finished)
            except BaseException:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)  # retrieved: no "never retrieved" noise
                raise
            return done

        try:
            count = asyncio.run(main())
        except ProviderError as exc:  # the model failed: one line naming it, and the run stays partial
            raise SdbError(f"recording stopped, the run {rec.run_id} is partial: {exc}") from None
        run = rec.run_id
    manifest_events = rec.events_written
    seconds = round(time.perf_counter() - started, 3)
    return RecordSummary(run, count, manifest_events, seconds, dict(sorted(terminal.items())))
