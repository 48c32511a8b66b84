"""The front door of a replay: :func:`prepare` checks it (a :class:`Replayer`) and picks where it runs,
here or sharded over Ray workers (:mod:`sdb.replay._ray`), which run the same :class:`Replayer` each."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.replay._options import Executor, ReplayOptions
from sdbctl.sdb.replay._ray import replay_on_ray, require_ray
from sdbctl.sdb.replay._results import ReplayProgress, ReplayResult
from sdbctl.sdb.replay._run import Replayer
from sdbctl.sdb.replay._step import survey
from sdbctl.sdb.store import Store


@dataclass(frozen=True)
class PreparedReplay:
    """A replay checked and ready to run: :func:`prepare` has raised whatever refuses it (bad input,
    a missing run, an agent or a model that does not fit) before any progress bar or run exists."""

    replayer: Replayer  #: the replay, its options final (those saved, when resuming)
    executor: Executor  #: where it runs
    notes: tuple[str, ...] = ()  #: what to tell the user before it runs, one line each (stderr)

    def run(self, on_progress: Callable[[ReplayProgress], None] | None = None) -> ReplayResult:
        """Run it, telling ``on_progress`` the counters as they change. Ctrl-C raises
        :class:`Interrupted`, saying which run it left partial and how to resume it."""
        try:
            if self.executor.kind == "ray":
                return replay_on_ray(self.replayer, self.executor, on_progress=on_progress)
            return self.replayer.run(on_progress)
        except KeyboardInterrupt:
            raise self.replayer.interrupted() from None


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
    if resume is None and not (source_run and (opts.model or opts.system is not None)):
        raise UsageError("replay needs RUN and --model (or --resume RUN_ID)")
    where = executor or Executor()
    if where.kind == "ray":
        require_ray()  # Ray is an optional extra
    replayer = Replayer(Store.open(store), source_run or "", opts, resume=resume, passed=passed)
    notes = survey(replayer.store, replayer.source_run, replayer.opts, asks_model=not replayer.recorded)
    return PreparedReplay(replayer, where, replayer.notes + notes)


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
