"""What a replay reports: the live counters (the progress bar, the Ray shards' sums), each session's
outcome, and the result. The result's fields are its ``--json`` keys (:func:`sdbctl.sdb.results.as_json`
serialises it), so no second list of keys can drift from the first."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sdbctl.sdb.providers import ProviderError
from sdbctl.sdb.replay._options import ReplayOptions

#: how a session of a replay ended: replayed to its end; stopped (session mode: an action with no
#: recorded effect, a question never asked); failed (a provider error after the last retry); resumed
#: (written whole by the attempt being resumed, not replayed again)
SESSION_STATUSES = ("complete", "stopped", "failed", "resumed")


@dataclass
class ReplayProgress:
    """Counters for the progress bar and the final summary, updated as the replay goes."""

    total: int = 0  #: units to replay (step mode: recorded model calls x repeats; session mode: sessions x repeats)
    done: int = 0  #: units finished, resumed ones included
    skipped: int = 0  #: units an earlier attempt finished (``--resume``, a retried shard)
    asked: int = 0  #: model calls made (retries included)
    cached: int = 0  #: answers taken from the response cache
    retried: int = 0  #: calls retried
    errors: int = 0  #: provider errors after the last retry, resumed units' included
    divergences: int = 0  #: units whose actions differ from the recording's, resumed ones included
    stopped_sessions: int = 0  #: session mode: sessions stopped at a divergence
    no_content: int = 0  #: steps recorded without their messages (traces without content): not replayable
    first_errors: dict[str, str] = field(default_factory=dict)  #: kind of provider error -> its first message

    def error(self, exc: ProviderError, message: str) -> None:
        """Count a provider error, keeping the first message of each kind for the summary."""
        self.errors += 1
        self.first_errors.setdefault(exc.kind, message)


@dataclass(kw_only=True)
class SessionOutcome:
    """How one session (one repeat of it) of a replay ended, as far as the engine knows."""

    session_id: str  #: the source session's id
    repeat: int  #: the repeat index (0 without ``--repeat``)
    status: str = "complete"  #: one of :data:`SESSION_STATUSES`
    steps: int = 0  #: model steps replayed by this call
    resumed_steps: int = 0  #: model steps an earlier attempt wrote, not asked again
    divergences: int = 0  #: step mode: model calls whose actions differ; session mode: 1 when the session's do
    errors: int = 0  #: provider errors after the last retry
    reason: str | None = None  #: why it stopped or failed (the first such message)


def clock() -> tuple[float, float]:
    """The wall and CPU clocks at the start of a replay, for :meth:`ReplayResult.of`."""
    return time.perf_counter(), time.process_time()


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """What one replay did: the run it wrote, its counters, and every session's outcome."""

    run_id: str  #: the replay's run
    source_run: str  #: the run replayed
    mode: str  #: step or session
    model: str  #: the model spec asked
    status: str  #: the run's status: complete, or partial (interrupted: ``--resume`` it)
    steps: int  #: units to replay (:attr:`unit`: model calls x repeats, or sessions x repeats)
    steps_done: int  #: units finished, resumed ones included
    resumed_steps: int  #: units an earlier attempt finished, not asked again
    model_calls: int  #: model calls made (retries included)
    cache_hits: int  #: answers taken from the response cache
    retries: int  #: calls retried (429, 5xx, timeouts)
    errors: int  #: provider errors after the last retry, resumed units' included (apart from divergence)
    #: units whose actions differ from the recording's (by digest, every layer), resumed ones included
    divergences: int
    stopped_sessions: int  #: session mode: sessions stopped at a divergence
    steps_without_content: int  #: steps recorded without their messages, not replayed
    first_errors: dict[str, str]  #: kind of provider error -> its first message
    seconds: float  #: wall time, to the millisecond
    cpu_seconds_per_step: float  #: this process's CPU time per finished unit (the engine's own cost)
    sessions: list[SessionOutcome]  #: per session and repeat, sorted

    @property
    def unit(self) -> str:
        """What ``steps``, ``resumed_steps`` and ``divergences`` count: recorded model calls (step mode,
        each repeat apart) or sessions (session mode). ``sdbctl diff`` counts otherwise: steps (the calls
        of one step of a session are one) or committed actions, of its layers, after tolerances."""
        return "model calls" if self.mode == "step" else "sessions"

    @classmethod
    def of(
        cls,
        *,
        run_id: str,
        opts: ReplayOptions,
        source_run: str,
        status: str,
        progress: ReplayProgress,
        sessions: Iterable[SessionOutcome],
        started: tuple[float, float],
    ) -> ReplayResult:
        """The result of a replay begun at ``started`` (:func:`clock`), from its counters and outcomes."""
        wall, cpu = (now - then for now, then in zip(clock(), started, strict=True))
        return cls(
            run_id=run_id,
            source_run=source_run,
            mode=opts.mode,
            model=opts.model,
            status=status,
            steps=progress.total,
            steps_done=progress.done,
            resumed_steps=progress.skipped,
            model_calls=progress.asked,
            cache_hits=progress.cached,
            retries=progress.retried,
            errors=progress.errors,
            divergences=progress.divergences,
            stopped_sessions=progress.stopped_sessions,
            steps_without_content=progress.no_content,
            first_errors=dict(progress.first_errors),
            seconds=round(wall, 3),
            cpu_seconds_per_step=round(cpu / max(progress.done, 1), 6),
            sessions=sorted(sessions, key=lambda s: (s.session_id, s.repeat)),
        )
