"""The registered workload whose code the differ consults, and when: a manifest's ``agent`` is a name read
from a store, and the workload it selects gives the verdict its pure actions and its success states. A
store that names another registered workload (``"agent": "research"`` on a renewal run) would choose
those: so a workload is consulted only when the run's events fit it, and base and candidate name the
same one.

A run's events fit a workload when every action name of its model (the actions the boundary knew) is
in the workload's vocabulary (its ``replay_boundary()``), and, when its success states are consulted,
every terminal state of the run is among the states it declares (``states``); a workload that declares
no vocabulary or no states is not checked on that count. A run that does not fit the workload its
manifest names is damaged: a one-line :class:`SchemaError` naming the run and the mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdbctl.sdb.agents import Workload, action_vocabulary, declared_states, registered_workload
from sdbctl.sdb.diff._outcomes import terminal_states
from sdbctl.sdb.diff._staging import Shape, model_action_names
from sdbctl.sdb.errors import SchemaError
from sdbctl.sdb.store import RunManifest
from sdbctl.sdb.text import visible

_SHOWN = 5  # names listed in a message, then "..."


def consulted_workloads(
    con: Any,
    runs: Sequence[tuple[RunManifest, Shape]],
    *,
    success_from_workload: bool,
    staged: bool = False,
) -> list[tuple[str, Workload]]:
    """The registered workload the runs name, as ``[(name, workload)]`` (empty when they name none).
    Each run naming one is checked against its events (its terminal states too when
    ``success_from_workload``: the config gives no ``[outcome] success``), then the runs must all name
    it; else a one-line :class:`SchemaError`. ``staged``: the runs' actions are read where
    :func:`sdb.diff._staging.read_runs` staged them, not in the store."""
    found: list[tuple[str, Workload]] = []
    for manifest, shape in runs:
        workload = registered_workload(manifest.agent) if manifest.agent else None
        if workload is not None:
            _check_fits(con, manifest, shape, workload, states=success_from_workload, staged=staged)
            found.append((manifest.agent or "", workload))
    if found and len({m.agent for m, _ in runs}) > 1:
        said = [f"run {m.run_id!r} {_names(m)}" for m, _ in runs]
        raise SchemaError(
            f"{' and '.join(said)}: a verdict compares runs of one agent, and the workload's code decides its "
            "rules; one of these manifests is damaged or the runs are not comparable"
        )
    return found[:1]


def _names(manifest: RunManifest) -> str:
    if not manifest.agent:
        return "names no agent (no registered workload)"
    if registered_workload(manifest.agent) is None:
        return f"names agent {visible(repr(manifest.agent))} (no registered workload)"
    return f"names workload {manifest.agent!r}"


def _check_fits(
    con: Any, manifest: RunManifest, shape: Shape, workload: Workload, *, states: bool, staged: bool
) -> None:
    """A one-line :class:`SchemaError` when the run's events do not fit ``workload`` (see the module)."""
    name = manifest.agent
    vocabulary = action_vocabulary(workload)
    if vocabulary is not None:
        foreign = [a for a in model_action_names(con, shape, staged=staged) if a not in vocabulary]
        if foreign:
            raise SchemaError(
                f"run {manifest.run_id!r} is damaged: its manifest names workload {name!r}, but its model's "
                f"actions {_listed(foreign)} are not {name}'s ({_listed(vocabulary)})"
            )
    declared = declared_states(workload) if states else None
    if declared is not None:
        unknown = [s for s in terminal_states(con, shape.run_id) if s not in declared]
        if unknown:
            raise SchemaError(
                f"run {manifest.run_id!r} is damaged: its manifest names workload {name!r}, but its sessions end "
                f"in states {_listed(unknown)}, which {name} never writes ({_listed(declared)})"
            )


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(visible(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
