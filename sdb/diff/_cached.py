"""How many of a run's answers came from a response cache rather than the model it names: a replay
marks each such llm event (``$.replay.cached``), and the diff and gate say the figure, since a verdict
on cached answers is a verdict on whatever model filled the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdbctl.sdb.diff._staging import mark

if TYPE_CHECKING:
    from sdbctl.sdb.diff._results import DiffSummary

_COUNT = """
SELECT count(*) FILTER (WHERE coalesce(try_cast(cached AS BOOLEAN), false)), count(*)
FROM marks WHERE run_id = ? AND kind = 'llm'
"""


def cached_answers(con: Any, run_id: str) -> tuple[int, int]:
    """(answers that came from a cache, answers) of ``run_id``'s llm events, on a DuckDB connection
    with the ``events`` view (:func:`sdb.store.connect`), from the marks the diff read once."""
    mark(con, run_id)
    cached, answers = con.execute(_COUNT, [run_id]).fetchone()
    return int(cached), int(answers)


def cached_text(s: DiffSummary) -> str:
    """The line the diff and gate print when the candidate has answers from a cache ("" without)."""
    if not s.cached_answers:
        return ""
    return f"{s.cached_answers} of the candidate's {s.answers} answers came from a cache, not from its model"
