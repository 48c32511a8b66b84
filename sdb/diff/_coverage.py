"""Sessions a run lacks: a candidate (or a noise run) with no event at all for some of the base's
sessions. Compared as they are, those sessions are wholly ``missing``, so a noise run that lacks most
of the base reads as a noise floor of 75% and hides any drift. Such a run is refused (one line, exit
2); with ``--allow-partial`` the lacking sessions are left out of every figure, and the summary says
how many (``left_out``)."""

from __future__ import annotations

from typing import Any

from sdbctl.sdb.diff._compared import Compared
from sdbctl.sdb.diff._outcomes import REPEAT_SUFFIX
from sdbctl.sdb.diff._staging import mark
from sdbctl.sdb.errors import SdbError


def lacking_sessions(con: Any, base: str, run: str, *, allow_partial: bool) -> set[str]:
    """The sessions of the staged base (table ``b``) that ``run`` has no event for (a session ``ID#rK``
    of a run of repeats counts for ``ID``); an SdbError naming ``run`` when there are any, unless
    ``allow_partial``. ``run``'s sessions are those :func:`sdb.diff._staging.mark` read."""
    mark(con, run)
    ours = {r[0] for r in con.execute("SELECT DISTINCT session_id FROM b").fetchall()}
    theirs = {
        s
        for row in con.execute(
            f"SELECT session_id, regexp_replace(session_id, '{REPEAT_SUFFIX}', '') FROM sessions WHERE run_id = ?",
            [run],
        ).fetchall()
        for s in row
    }
    lacking = ours - theirs
    if ours and lacking == ours:  # --allow-partial leaves out what is lacking, not every session
        raise SdbError(
            f"nothing to compare: run {run!r} shares none of the {len(ours)} sessions of the base {base!r} "
            f"(e.g. {min(ours)!r})"
        )
    if lacking and not allow_partial:
        first = min(lacking)
        raise SdbError(
            f"run {run!r} lacks {len(lacking)} of the {len(ours)} sessions of the base {base!r} "
            f"(e.g. {first!r}): they would count as wholly diverged; replay them, or pass --allow-partial "
            "to count only the sessions all runs share"
        )
    return lacking


def drop_sessions(compared: Compared, sessions: set[str]) -> None:
    """Leave ``sessions`` out of ``compared``'s units (their divergences are left out as they are put in
    order: :meth:`sdb.diff._found.Found.finish`)."""
    if not sessions:
        return
    for counter in (*compared.units.values(), *compared.diverged.values()):
        for s in sessions:
            counter.pop(s, None)
