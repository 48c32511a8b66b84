"""Which agent a replay runs, and the refusals that name it: stores travel (CI artifacts, shared
buckets), so code named by a store is never imported, and a simulator of another workload is refused
before it gives nothing but parse failures."""

from __future__ import annotations

from sdbctl.sdb.agents import Workload, load_agent, workload_names
from sdbctl.sdb.errors import SdbError, UsageError


def choose_agent(manifest_agent: str | None, given: str | None) -> Workload | None:
    """The agent named on the command line (``--agent``), else the source manifest's when it is a
    registered workload name; a path or module named by a manifest is never imported."""
    if given:
        return load_agent(given)
    if not manifest_agent or manifest_agent not in workload_names():
        return None
    try:
        return load_agent(manifest_agent)
    except SdbError:
        return None


def no_agent(run: str, agent: str | None, needs: str) -> UsageError:
    """The refusal of what ``needs`` an agent when none can be loaded, saying how to name one."""
    if agent and agent not in workload_names():
        return UsageError(
            f"{needs}, and run {run!r} names agent {agent!r}, code that sdbctl does not import from a store; "
            f"check it and pass --agent {agent} to run it"
        )
    return UsageError(f"{needs}, and run {run!r} names no agent that can be loaded ({agent or 'none recorded'})")
