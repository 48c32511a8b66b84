"""Session outcomes and their flips: did the task succeed, in the base and in the candidate?

A session's outcome is an imported one (a ``state`` event named ``outcome`` with ``{"value": X}``,
X in [0, 1]; it passes when X >= ``pass_threshold``, default 1.0), else the terminal state of a
recorded agent: the last ``state`` event of the session, which passes when it is one of the
workload's success states (``[outcome] success = [...]``, or what the workload declares in the run's
manifest). Sessions ``ID#rK`` are repeat K of ``ID``.

Flips pair repeat 0 of each session present on both sides. The paired test is the exact McNemar
test, one-sided: the p-value of seeing at least this many negative flips (base passed, candidate
failed) among the discordant pairs if either direction were equally likely. With repeats, pass^k is
the unbiased estimator over each session's c successes in n repeats, C(c, k) / C(n, k), averaged over
sessions (Yao et al., tau-bench). Beside the p-value, what the test could have seen: the smallest fall
of the pass rate it detects at 80% power with these sessions, and the sessions it would need for a
given fall (:mod:`sdb.diff._power`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

from sdbctl.sdb.diff._power import DEFAULT_TARGET, mcnemar_min_detectable, mcnemar_sessions_needed
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.settings import read_table

OUTCOME_STATE = "outcome"
# a session id ``ID#rK`` is repeat K of session ``ID``: the one spelling every query of the differ uses
REPEAT_SUFFIX = r"#r([0-9]+)$"
# a session's terminal state: its last state event but an imported outcome and a replay's own marks
_TERMINAL = f"arg_max(name, seq) FILTER (WHERE name <> '{OUTCOME_STATE}' AND name NOT LIKE 'replay:%')"


@dataclass(frozen=True)
class OutcomeConfig:
    """Which terminal states are a success, and the reward an imported outcome needs to pass."""

    success: tuple[str, ...] | None = None
    pass_threshold: float = 1.0
    source: str | None = None  #: the config file they came from


def load_outcome_config(directory: Path | None = None) -> OutcomeConfig:
    """``[outcome]`` of ``sdbctl.toml`` (or ``[tool.sdbctl.outcome]`` of ``pyproject.toml``)."""
    table, source = read_table("outcome", directory)
    where = source or "config"
    unknown = set(table) - {"success", "pass_threshold"}
    if unknown:
        raise SdbError(f"{where}: unknown [outcome] key(s) {', '.join(sorted(unknown))} (success, pass_threshold)")
    success = table.get("success")
    if success is not None and (not isinstance(success, list) or not all(isinstance(s, str) for s in success)):
        raise SdbError(f"{where}: [outcome] success must be a list of state names")
    threshold = table.get("pass_threshold", 1.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise SdbError(f"{where}: [outcome] pass_threshold must be a number in [0, 1], not {threshold!r}")
    return OutcomeConfig(tuple(success) if success is not None else None, float(threshold), source)


def session_outcomes(
    con: Any, run_id: str, success: Sequence[str] | None, pass_threshold: float
) -> dict[tuple[str, int], bool]:
    """(session, repeat) -> passed, for every session of ``run_id`` that has an outcome."""
    rows = con.execute(
        f"""
        SELECT regexp_replace(session_id, '{REPEAT_SUFFIX}', '') AS sid,
               coalesce(try_cast(regexp_extract(session_id, '{REPEAT_SUFFIX}', 1) AS BIGINT), 0) AS rep,
               max(CASE WHEN name = '{OUTCOME_STATE}' THEN try_cast(json_extract(payload, '$.value') AS DOUBLE) END),
               {_TERMINAL}
        FROM events WHERE run_id = ? AND kind = 'state' GROUP BY ALL
        """,
        [run_id],
    ).fetchall()
    out: dict[tuple[str, int], bool] = {}
    for sid, rep, value, terminal in rows:
        if value is not None:
            out[(sid, int(rep))] = value >= pass_threshold
        elif success is not None and terminal is not None:
            out[(sid, int(rep))] = terminal in success
    return out


# each session's terminal state (as _TERMINAL takes it), of runs not yet read, into temp table last_states
_LAST_STATES = f"""INSERT INTO last_states SELECT run_id, session_id, t FROM (
    SELECT run_id, session_id, {_TERMINAL} AS t FROM events WHERE run_id IN ({{runs}}) AND kind = 'state'
    GROUP BY ALL)
    WHERE t IS NOT NULL"""
_LAST_STATES_TABLE = """CREATE TEMP TABLE IF NOT EXISTS last_states (run_id VARCHAR, session_id VARCHAR, last VARCHAR);
    CREATE TEMP TABLE IF NOT EXISTS last_states_read (run_id VARCHAR)"""


def last_states(con: Any, *runs: str) -> None:
    """Read the terminal state of every session of ``runs`` that has one into temp table
    ``last_states`` (``run_id, session_id, last``), in one scan for all of them; a run already read is
    not read again (the workload check and the summary both ask)."""
    con.execute(_LAST_STATES_TABLE)
    known = {r[0] for r in con.execute("SELECT run_id FROM last_states_read").fetchall()}
    new = [r for r in dict.fromkeys(runs) if r not in known]
    if new:
        con.execute(_LAST_STATES.format(runs=", ".join("?" * len(new))), new)
        con.executemany("INSERT INTO last_states_read VALUES (?)", [[r] for r in new])


def terminal_states(con: Any, run_id: str) -> list[str]:
    """The terminal states the sessions of ``run_id`` ended in (as :func:`session_outcomes` reads them)."""
    last_states(con, run_id)
    rows = con.execute("SELECT DISTINCT last FROM last_states WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()
    return [r[0] for r in rows]


def mcnemar_one_sided(negative: int, positive: int) -> float:
    """Exact one-sided McNemar p-value: P(X >= negative), X ~ Binomial(negative + positive, 1/2)."""
    n = negative + positive
    if n == 0:
        return 1.0
    return float(sum(comb(n, i) for i in range(negative, n + 1)) / 2**n)


def pass_hat_k(results: Mapping[str, Sequence[bool]], k: int) -> float | None:
    """The unbiased pass^k over sessions with at least k repeats: mean of C(c, k) / C(n, k)."""
    scores = [comb(sum(r), k) / comb(len(r), k) for r in results.values() if len(r) >= k]
    return sum(scores) / len(scores) if scores else None


def _pass_k(found: Mapping[tuple[str, int], bool]) -> dict[str, float | None] | None:
    by_session: dict[str, list[bool]] = defaultdict(list)
    for (sid, _rep), ok in sorted(found.items()):
        by_session[sid].append(ok)
    n = max((len(v) for v in by_session.values()), default=0)
    if n < 2:
        return None
    return {str(k): pass_hat_k(by_session, k) for k in range(1, n + 1)}


@dataclass(kw_only=True)
class Flips:
    """The sessions whose outcome flipped (repeat 0, base order)."""

    negative: list[str]  #: base passed, candidate failed (or has no outcome)
    positive: list[str]  #: base failed, candidate passed


@dataclass(kw_only=True)
class PassK:
    """pass^k per side: ``{"1": p, "2": p, ...}`` up to the repeats each session has (None without repeats)."""

    base: dict[str, float | None] | None  #: the base's pass^k
    candidate: dict[str, float | None] | None  #: the candidate's pass^k


@dataclass(kw_only=True)
class OutcomeSummary:
    """The outcome figures of a diff, over the base's sessions (repeat 0)."""

    sessions: int  #: base sessions with an outcome
    missing: int  #: of them, sessions the candidate has no outcome for (counted as failures)
    base_pass: int  #: sessions the base passed
    candidate_pass: int  #: sessions the candidate passed
    negative_flips: int  #: pass -> fail
    positive_flips: int  #: fail -> pass
    mcnemar_p: float  #: exact one-sided McNemar p-value of the negative flips
    flipped: Flips  #: which sessions flipped
    pass_k: PassK  #: pass^k per side
    alpha: float = 0.05  #: the level the power figures are for (the gate's outcome_alpha)
    #: the smallest fall of the pass rate (a proportion: negative-flip rate - the observed positive-flip
    #: rate) the test detects at 80% power with these sessions; None: none up to 1
    min_detectable: float | None = None
    target: float | None = None  #: the fall ``sessions_needed`` is for
    sessions_needed: int | None = None  #: sessions that would detect a fall of ``target`` at 80% power

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutcomeSummary:
        """Outcome figures read back from their JSON (inside a saved summary)."""
        return cls(**{**data, "flipped": Flips(**data["flipped"]), "pass_k": PassK(**data["pass_k"])})


def compare_outcomes(
    base: Mapping[tuple[str, int], bool],
    candidate: Mapping[tuple[str, int], bool],
    *,
    alpha: float = 0.05,
    target: float = DEFAULT_TARGET,
    left_out: Collection[str] = (),
) -> OutcomeSummary | None:
    """The outcome figures of a diff (None when either side has no outcome at all): pass counts and
    flips over the base's sessions (repeat 0) but those ``left_out``, the one-sided McNemar p-value
    and its power figures at ``alpha`` (``target``: the fall whose sessions needed are reported), and
    pass^k per side. A base session the candidate has no outcome for (never reached its end) counts as
    a candidate failure, and is counted under ``missing``: a task that no longer completes did not pass."""
    if left_out:
        base = {k: v for k, v in base.items() if k[0] not in left_out}
        candidate = {k: v for k, v in candidate.items() if k[0] not in left_out}
    if not base or not candidate:
        return None
    paired = sorted({s for s, r in base if r == 0})
    missing = [s for s in paired if (s, 0) not in candidate]
    got = {s: candidate.get((s, 0), False) for s in paired}
    negative = [s for s in paired if base[(s, 0)] and not got[s]]
    positive = [s for s in paired if not base[(s, 0)] and got[s]]
    positive_rate = len(positive) / len(paired) if paired else 0.0
    return OutcomeSummary(
        sessions=len(paired),
        missing=len(missing),
        base_pass=sum(base[(s, 0)] for s in paired),
        candidate_pass=sum(got.values()),
        negative_flips=len(negative),
        positive_flips=len(positive),
        mcnemar_p=mcnemar_one_sided(len(negative), len(positive)),
        flipped=Flips(negative=negative, positive=positive),
        pass_k=PassK(base=_pass_k(base), candidate=_pass_k(candidate)),
        alpha=alpha,
        min_detectable=mcnemar_min_detectable(len(paired), positive_rate, alpha) if paired else None,
        target=target,
        sessions_needed=mcnemar_sessions_needed(positive_rate, target, alpha),
    )
