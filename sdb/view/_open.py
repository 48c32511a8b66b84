"""The diff ``sdbctl view`` shows: computed afresh, as ``sdbctl diff`` computes it. A diff saved in the
store is data, and the page's figures are never taken from it."""

from __future__ import annotations

from sdbctl.sdb.diff import DiffConfig, DiffResult, diff_runs, load_config, load_outcome_config
from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.gate import base_and_candidate
from sdbctl.sdb.store import Store


def runs_to_view(store: Store, runs: list[str]) -> tuple[str, str]:
    """The base and candidate of ``view BASE CANDIDATE``, or of ``view RUN`` (RUN against the run it was
    replayed from: the manifest's ``source_run`` only proposes which run to compare)."""
    if len(runs) == 2:
        return runs[0], runs[1]
    if len(runs) == 1:
        return base_and_candidate(store, runs[0], hint="name the base: sdbctl view BASE CANDIDATE")
    raise UsageError(f"sdbctl view takes BASE CANDIDATE or one RUN, not {len(runs)} runs")


def diff_to_view(
    store: Store,
    base: str,
    candidate: str,
    *,
    config: DiffConfig | None = None,
    alignment: str = "auto",
    noise_run: str | None = None,
    allow_partial: bool = False,
) -> DiffResult:
    """``base`` against ``candidate`` with ``config`` (default: the project's ``[diff]`` settings) and the
    project's ``[outcome]`` settings, as ``sdbctl diff`` compares them with the same options."""
    return diff_runs(
        store,
        base,
        candidate,
        config if config is not None else load_config(),
        noise_run=noise_run,
        allow_partial=allow_partial,
        alignment=alignment,
        outcome_config=load_outcome_config(),
    )
