"""What a replay can be told, and where it runs. Both refuse what no replay can mean when they are
built, also from saved options (``--resume``, the Ray workers), so that a bad value is one line before
any model is asked or any run is created."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.events import MAX_REPEAT  # a saved ``repeat`` beyond it is refused, never run
from sdbctl.sdb.replay._system import SystemChange

RECORDED = "recorded"  #: the model spec that answers with the recorded answers (zero divergence)
MODES = ("step", "session")  #: step: ask each recorded step again; session: run the agent again
ON_DIVERGENCE = ("stop", "continue")  #: session mode, at an action with no recorded effect
EXECUTORS = ("local", "ray")  #: this process, or sessions sharded over Ray workers
DEFAULT_SEED = 0  #: the seed a replay asks with unless told (``record --seed``'s default)


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """Everything ``sdbctl replay`` can be told of one replay; keyword-only, as many fields are alike."""

    model: str  #: the model spec to ask (:data:`RECORDED`, ``sim:...``, ``openai:...``, ...)
    prompts: Mapping[str, str] = field(default_factory=dict)  #: template name -> the version to re-render
    mode: str = "step"  #: one of :data:`MODES`
    repeat: int = 1  #: ask every step (or run every session) this many times
    concurrency: int = 8  #: model calls in flight at once
    rpm: float | None = None  #: at most this many requests per minute (None: no limit)
    timeout: float = 60.0  #: seconds before a model call is given up
    retries: int = 5  #: attempts per call (429, 5xx, timeouts)
    cache: bool = True  #: read and write this machine's response cache
    cache_from: str | None = None  #: also answer from this cache file, read-only (one that came with a store)
    on_divergence: str = "stop"  #: one of :data:`ON_DIVERGENCE`
    base_url: str | None = None  #: the server of an OpenAI-compatible or Anthropic provider
    run_id: str | None = None  #: the new run's id (None: generated)
    seed: int | None = None  #: the seed of the simulators and simulated world (None: :data:`DEFAULT_SEED`)
    agent_options: Mapping[str, Any] | None = None  #: session mode: the agent's options (None: its defaults)
    allow_partial: bool = False  #: replay a partial (interrupted) source run anyway
    agent: str | None = None  #: the agent named on the command line (never taken from a store)
    system: SystemChange | None = None  #: ``--system`` / ``--system-from``: new system prompts (step mode)

    def __post_init__(self) -> None:
        """NaN passes no comparison, so each check says what is allowed rather than what is not."""
        counts = (("repeat", self.repeat, 1), ("concurrency", self.concurrency, 1), ("retries", self.retries, 0))
        for name, count, least in counts:
            if isinstance(count, bool) or not isinstance(count, int) or count < least:
                raise UsageError(f"--{name} must be a whole number >= {least}, not {count!r}")
        if self.repeat > MAX_REPEAT:
            raise UsageError(f"--repeat must be at most {MAX_REPEAT}, not {self.repeat!r}")
        for name, number, optional in (("timeout", self.timeout, False), ("rpm", self.rpm, True)):
            if number is None and optional:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number < float("inf"):
                raise UsageError(f"--{name} must be a finite number > 0, not {number!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise UsageError(f"--seed must be a whole number, not {self.seed!r}")
        if self.mode not in MODES:
            raise UsageError(f"--mode must be step or session, not {self.mode!r}")
        if self.on_divergence not in ON_DIVERGENCE:
            raise UsageError("--on-divergence must be stop or continue")
        if self.mode == "step" and (self.on_divergence != "stop" or self.agent_options):  # else silently unused
            given = "--on-divergence" if self.on_divergence != "stop" else "--spine"
            raise UsageError(f"{given} applies to --mode session only (step mode runs no agent)")
        if self.system is not None and self.mode != "step":  # session mode's requests are the agent's own
            raise UsageError(
                "--system and --system-from apply to step mode: a session-mode replay runs the agent, whose "
                "code writes its system prompt; use --prompt NAME@VERSION for a workload's templates"
            )
        if self.system is not None and self.model == RECORDED:
            raise UsageError(
                "--system with --model recorded: the recorded answers do not change with the system prompt; "
                "name the model to ask (--model, or --base-url alone for the run's own model)"
            )
        if self.cache_from is not None and (not self.cache or self.repeat > 1 or self.model == RECORDED):
            why = "--no-cache" if not self.cache else "--repeat" if self.repeat > 1 else "--model recorded"
            raise UsageError(f"--cache-from {self.cache_from}: no cache is read with {why}")


@dataclass(frozen=True, kw_only=True)
class Executor:
    """Where a replay runs; the Ray settings are refused for the local executor rather than ignored."""

    kind: str = "local"  #: one of :data:`EXECUTORS`
    address: str | None = None  #: ray: the cluster to join (None: start Ray on this machine)
    workers: int | None = None  #: ray: worker processes (None: the cluster's CPUs)
    setup: tuple[str, ...] = ()  #: ray: ``MODULE:FUNCTION`` callables each worker runs first (registrations)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise UsageError(f"--executor must be local or ray, not {self.kind!r}")
        if self.kind == "local" and (self.address or self.workers):
            raise UsageError("--address and --workers apply to --executor ray")
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be 1 or more")


def prompt_versions(refs: Iterable[str]) -> dict[str, str]:
    """``NAME@VERSION`` references (``--prompt``) as name -> version; a malformed one is refused."""
    versions: dict[str, str] = {}
    for ref in refs:
        name, at, version = ref.partition("@")
        if not at or not name or not version:
            raise UsageError(f"--prompt {ref!r}: use NAME@VERSION, e.g. offer@v2")
        versions[name] = version
    return versions
