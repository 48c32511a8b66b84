"""Replay: ask a recorded run's questions again under another model or prompt version, and record
the answers as a new run.

Two modes (:data:`MODES`):

- ``step`` (default, needs no agent code): every recorded ``llm`` step is asked again with its
  recorded context (its prompt re-rendered from the recorded variables where a new version is
  given); the answer crosses the boundary rules (parse, validate, normalize, digest) and its actions
  are written with the source's session and step. Effects are never executed.
- ``session`` (closed loop): the agent runs again on the recorded inputs; an action identical (same
  digest) to a recorded one gets the recorded effect, and so does a human question identical to a
  recorded one; at the first action with no recorded effect the session stops (or, with
  ``on_divergence="continue"``, goes on through handlers marked ``pure``).

Model calls are paced (concurrency, requests per minute), retried with backoff that honours
Retry-After, bounded by a timeout, and cached on this machine (never in the store: see
:mod:`sdb.replay._cache`); an answer a cache gave is marked ``$.replay.cached`` on its llm event. A
provider error after the last retry is an ``error`` event for that step, counted apart from
divergence. Each step's events are written as one unit, so an interrupted replay (``partial``)
resumes without asking any finished step again. With ``Executor(kind="ray")`` the sessions are
sharded over Ray workers writing into the same run.
"""

from __future__ import annotations

from sdbctl.sdb.events import MAX_REPEAT
from sdbctl.sdb.replay._cache import CacheError, cache_endpoint, cache_key, cache_path, settle_journals
from sdbctl.sdb.replay._options import (
    EXECUTORS,
    MODES,
    ON_DIVERGENCE,
    RECORDED,
    Executor,
    ReplayOptions,
    prompt_versions,
)
from sdbctl.sdb.replay._prepare import PreparedReplay, prepare, replay
from sdbctl.sdb.replay._results import SESSION_STATUSES, ReplayProgress, ReplayResult, SessionOutcome
from sdbctl.sdb.replay._system import SystemChange, SystemFile, SystemRule, system_change

__all__ = [
    "EXECUTORS",
    "MAX_REPEAT",
    "MODES",
    "ON_DIVERGENCE",
    "RECORDED",
    "SESSION_STATUSES",
    "CacheError",
    "Executor",
    "PreparedReplay",
    "ReplayOptions",
    "ReplayProgress",
    "ReplayResult",
    "SessionOutcome",
    "SystemChange",
    "SystemFile",
    "SystemRule",
    "cache_endpoint",
    "cache_key",
    "cache_path",
    "prepare",
    "prompt_versions",
    "replay",
    "settle_journals",
    "system_change",
]
