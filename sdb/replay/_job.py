"""The replay under way, as the two modes see it: one object, so that step and session mode take what
they need from it and not from the engine that set it up."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdbctl.sdb.agents import Workload
from sdbctl.sdb.recording import Recorder
from sdbctl.sdb.replay._calling import Caller
from sdbctl.sdb.replay._options import ReplayOptions
from sdbctl.sdb.replay._results import ReplayProgress, SessionOutcome
from sdbctl.sdb.store import RunManifest, Store


@dataclass
class Job:
    """One replay's source, options, agent, model, counters and the run it writes."""

    store: Store  #: where the source run is, and the replay's run
    source: RunManifest  #: the source run's manifest
    opts: ReplayOptions  #: the options (those saved in the manifest, when resuming)
    seed: int  #: the seed the model is asked with
    workload: Workload | None  #: the agent (session mode, prompt re-rendering, its replay boundary)
    caller: Caller | None  #: the model (None: the recorded answers)
    rec: Recorder  #: the replay's run
    truth: Callable[[Mapping[str, Any]], None]  #: appends a simulator's ground truth beside the events
    progress: ReplayProgress  #: the live counters
    tick: Callable[[], None]  #: reports the counters to whoever watches
    in_flight: int  #: model calls at once
    sessions: frozenset[str] | None = None  #: the shard's sessions (None: every session)
    options: Mapping[str, Any] = field(default_factory=dict)  #: session mode: the agent's options
    resuming: bool = False  #: the run may hold finished units already (``--resume``, a shard)
    outcomes: dict[tuple[str, int], SessionOutcome] = field(default_factory=dict)  #: by (session, repeat)

    def outcome(self, session_id: str, repeat: int) -> SessionOutcome:
        """The outcome of ``session_id``'s repeat ``repeat``, begun when first asked for."""
        found = self.outcomes.get((session_id, repeat))
        if found is None:
            found = self.outcomes[session_id, repeat] = SessionOutcome(session_id=session_id, repeat=repeat)
        return found
