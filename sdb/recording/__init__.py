"""The in-process recorder (``Recorder``, ``Session``) and the names of runs: what ``recorders.sdk``
re-exports for agents, and what the replay engine writes its runs through."""

from sdbctl.sdb.recording._manifest import manifest_fields, new_run_id
from sdbctl.sdb.recording._recorder import Recorder
from sdbctl.sdb.recording._session import Session

__all__ = ["Recorder", "Session", "manifest_fields", "new_run_id"]
