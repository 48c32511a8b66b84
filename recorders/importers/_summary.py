"""What an import reports: one shape for every importer, so the CLI prints them alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ImportSummary:
    """What an import wrote: the new run, its events and sessions, and the input it skipped."""

    run_id: str
    events: int
    sessions: int
    skipped: int
