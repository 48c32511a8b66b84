"""What ``sdbctl view`` shows, for one diff: the header, the severity-sorted session list in pages, one
session aligned as the differ aligned it, and one model call (the JSON shapes are docs/view.md's).

Built once per diff: the divergences (the diff's own Parquet file) and one row per session are loaded
into DuckDB, so that a page of a 100,000-session list is one indexed query, never a Python object per
session. A session's detail is staged and aligned on demand by the differ's own functions
(:func:`sdb.diff._staging.stage`, :func:`sdb.diff.align_by_name` / :func:`sdb.diff.align`) over that
session's events only: the page shows the pairs the differ compared, not a second copy of its rule.
Everything returned is plain JSON data; recorded strings are returned as they are (the page inserts
them as text).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sdbctl.sdb.diff import (
    LAYERS,
    REASONS,
    DiffConfig,
    DiffResult,
    OutcomeConfig,
    Pair,
    align,
    align_by_name,
    load_config,
    load_outcome_config,
    shape,
)
from sdbctl.sdb.diff._align import reordered
from sdbctl.sdb.diff._outcomes import session_outcomes
from sdbctl.sdb.diff._speech import speech_text
from sdbctl.sdb.diff._staging import mark, stage
from sdbctl.sdb.errors import UsageError
from sdbctl.sdb.events import DIVERGENCE_SCHEMA
from sdbctl.sdb.gate import Verdict
from sdbctl.sdb.results import as_json
from sdbctl.sdb.store import Store, connect, event_dicts, named_damage
from sdbctl.sdb.text import visible

#: the outcome filter's values: a flip either way, an unchanged pass or fail, "" no change at all
OUTCOMES = ("pass->fail", "fail->pass", "pass", "fail", "")
MAX_LIMIT = 5_000  #: the most rows one page holds
KEPT_DETAILS = 32  #: session details kept once made
DETAILS_PER_STAGING = 50  #: sessions staged at once by :meth:`ViewData.details`
_PER_SESSION = ("session_ids", "first_divergence")  #: the summary's lists left out of the header
_SIDES = ("base", "candidate")

# one row per session: its outcome change, its divergences per layer, its first divergence, and its
# place in the severity order (pass->fail; a write divergence, earliest first; another layer; equal)
_SESSIONS = """
CREATE TEMP TABLE sess AS
WITH per AS (
    SELECT session_id,
           count(*) FILTER (WHERE layer = 'write') AS n_write,
           count(*) FILTER (WHERE layer = 'read') AS n_read,
           count(*) FILTER (WHERE layer = 'speech') AS n_speech,
           count(DISTINCT repeat) AS reps_diverged,
           min(coalesce(base_seq, candidate_seq)) FILTER (WHERE layer = 'write' AND repeat = 0) AS write_at0,
           min(coalesce(base_seq, candidate_seq)) FILTER (WHERE layer = 'write') AS write_at,
           arg_min(i, (layer NOT IN (SELECT layer FROM gated), repeat, i)) AS first_i,
           lower(string_agg(coalesce(base_action, '') || chr(10) || coalesce(candidate_action, '') || chr(10)
                            || paths, chr(10))) AS words
    FROM d GROUP BY session_id
)
SELECT s.session_id, o.base, o.candidate, o.change,
       coalesce(per.n_write, 0) AS n_write, coalesce(per.n_read, 0) AS n_read,
       coalesce(per.n_speech, 0) AS n_speech, coalesce(per.reps_diverged, 0) AS reps_diverged,
       per.first_i, lower(s.session_id) || chr(10) || coalesce(per.words, '') AS haystack,
       (row_number() OVER (ORDER BY o.change = 'pass->fail' DESC, coalesce(per.n_write, 0) > 0 DESC,
                                    coalesce(per.write_at0, per.write_at), per.session_id IS NOT NULL DESC,
                                    s.session_id) - 1) AS rank
FROM all_sessions s
LEFT JOIN per USING (session_id)
LEFT JOIN outcomes o USING (session_id)
"""


class ViewData:
    """What the page shows, for one diff: built once, then asked page by page (thread-safe: the
    server answers from several threads, one question at a time here)."""

    def __init__(
        self,
        store: Store,
        result: DiffResult,
        verdict: Verdict | None,
        config: DiffConfig,
        outcome_config: OutcomeConfig | None,
    ) -> None:
        self.store = store
        self.result = result
        self.verdict = verdict
        self.base, self.candidate = result.base_run, result.candidate_run
        s = result.summary
        self.comparison = s.comparison
        self.repeats = max(1, s.repeats)
        self.config = _applied(config, result)
        self._lock = threading.Lock()
        self._header: dict[str, Any] | None = None
        self._details: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()  # the last sessions asked
        with named_damage(store, (self.base, self.candidate)):
            self.con = connect(store, runs=(self.base, self.candidate))
            # whether each run has llm events (then only the actions answering one are the model's)
            self.has_llm = {
                run: bool(
                    self.con.execute("SELECT 1 FROM events WHERE run_id = ? AND kind = 'llm' LIMIT 1", [run]).fetchall()
                )
                for run in (self.base, self.candidate)
            }
            self._mini = duckdb.connect(":memory:")  # one session's events at a time, staged as the differ does
            self._load_divergences()
            self._load_sessions(outcome_config)

    @classmethod
    def for_diff(
        cls,
        store: Store,
        result: DiffResult,
        verdict: Verdict | None = None,
        *,
        config: DiffConfig | None = None,
        outcome_config: OutcomeConfig | None = None,
    ) -> ViewData:
        """The view of ``result`` (a diff of two runs of ``store``), with the gate's ``verdict`` if any.
        ``config``/``outcome_config``: the ones the diff was computed with (default: the project's); the
        layer rules actually applied are taken from the result's own ``rules``."""
        return cls(store, result, verdict, config if config is not None else load_config(), outcome_config)

    # ---- build -----------------------------------------------------------------------------------

    def _load_divergences(self) -> None:
        """The diff's divergences as temp table ``d`` (``i``: their order in the file, the order every
        output lists them), with each one's changed field paths as text."""
        path = self.result.divergences.path
        if len(self.result.divergences) and Path(path).exists():
            table = pq.read_table(path, schema=DIVERGENCE_SCHEMA)
        else:  # a diff held in memory (or none): its rows in order
            rows = [
                {**d.as_dict(), "base_action": d.base_action, "candidate_action": d.candidate_action}
                for d in self.result.divergences
            ]
            for r in rows:
                r.pop("action")
                r["fields"] = orjson.dumps(r["fields"]).decode()
                r["base_run"], r["candidate_run"] = self.base, self.candidate
            table = pa.Table.from_pylist(rows, schema=DIVERGENCE_SCHEMA)
        table = table.append_column("i", pa.array(range(table.num_rows), pa.int64()))
        self.con.register("d_arrow", table)
        self.con.execute(
            "CREATE TEMP TABLE d AS SELECT *, coalesce(array_to_string("
            "json_extract_string(CASE WHEN fields IS NULL OR fields = '' THEN '[]' ELSE fields END, '$[*].path'), "
            "chr(10)), '') AS paths FROM d_arrow"
        )
        self.con.unregister("d_arrow")
        self.con.register("gated", pa.table({"layer": pa.array(list(self.result.summary.layers), pa.string())}))

    def _load_sessions(self, outcome_config: OutcomeConfig | None) -> None:
        """Temp table ``sess``: one row per session compared (see :data:`_SESSIONS`)."""
        s = self.result.summary
        base_ok: dict[str, bool] = {}
        cand_ok: dict[str, bool] = {}
        negative: set[str] = set()
        positive: set[str] = set()
        if s.outcomes is not None:  # each side's pass/fail (repeat 0) judged as the differ judged it
            success = next((r.values for r in s.rules if r.rule == "success" and r.obeyed), None)
            threshold = (outcome_config or load_outcome_config()).pass_threshold
            for run, found in ((self.base, base_ok), (self.candidate, cand_ok)):
                found.update(
                    (sid, ok)
                    for (sid, rep), ok in session_outcomes(self.con, run, success, threshold).items()
                    if rep == 0
                )
            negative, positive = set(s.outcomes.flipped.negative), set(s.outcomes.flipped.positive)
        diverged = [r[0] for r in self.con.execute("SELECT DISTINCT session_id FROM d").fetchall()]
        flipped = sorted(negative | positive)
        ids = sorted({*s.session_ids, *diverged, *flipped, *base_ok})
        self.con.register("all_sessions", pa.table({"session_id": pa.array(ids, pa.string())}))
        base = [base_ok.get(x) for x in ids]
        cand = [cand_ok.get(x) for x in ids]
        change = ["pass->fail" if x in negative else "fail->pass" if x in positive else "" for x in ids]
        self.con.register(
            "outcomes",
            pa.table(
                {
                    "session_id": pa.array(ids, pa.string()),
                    "base": pa.array(base, pa.bool_()),
                    "candidate": pa.array(cand, pa.bool_()),
                    "change": pa.array(change, pa.string()),
                }
            ),
        )
        self.con.execute(_SESSIONS)
        self.con.execute("CREATE INDEX sess_id ON sess (session_id)")
        self.con.unregister("all_sessions")
        self.con.unregister("outcomes")

    # ---- the header ------------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """GET /api/header: the runs, how they were compared, every figure of the summary, the verdict,
        and the values each filter can take. Made once (a large summary lists every session id), then
        the same dict each time: do not change it."""
        with self._lock:
            if self._header is None:
                self._header = self._make_header()
            return self._header

    def _make_header(self) -> dict[str, Any]:
        s = self.result.summary
        facets = {
            "layers": self._distinct("layer"),
            "reasons": self._distinct("reason"),
            "actions": [
                r[0]
                for r in self.con.execute(
                    "SELECT DISTINCT a FROM (SELECT base_action AS a FROM d UNION SELECT candidate_action FROM d) "
                    "WHERE a IS NOT NULL ORDER BY 1"
                ).fetchall()
            ],
            "outcomes": list(OUTCOMES),
        }
        verdict = None
        if self.verdict is not None:
            verdict = {
                "passed": self.verdict.passed,
                "checks": [
                    {"name": c.name, "limit": c.limit, "measured": c.measured, "passed": c.passed}
                    for c in self.verdict.checks
                ],
            }
        return {
            "base_run": self.base,
            "candidate_run": self.candidate,
            "comparison": s.comparison,
            "layers": list(s.layers),
            # every figure; the per-session lists (every session id, each one's first divergence) are
            # the session list's to page, not the header's to send whole (100,000 sessions: megabytes)
            "summary": {k: v for k, v in as_json(s).items() if k not in _PER_SESSION},
            "verdict": verdict,
            "facets": facets,
            "sessions": s.sessions_compared,
        }

    def _distinct(self, column: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"SELECT DISTINCT {column} FROM d ORDER BY 1").fetchall()]

    # ---- the session list ------------------------------------------------------------------------

    def sessions(
        self,
        *,
        offset: int = 0,
        limit: int = 200,
        layer: str | None = None,
        reason: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        text: str | None = None,
        differ_only: bool = False,
    ) -> dict[str, Any]:
        """GET /api/sessions: rows ``offset`` to ``offset + limit`` of the filtered, severity-sorted list.
        ``layer``, ``reason`` and ``action`` keep the sessions with a divergence that has them all;
        ``outcome`` one of :data:`OUTCOMES` (``""``: no flip); ``text`` a case-insensitive substring of
        the session id, a diverged action's name or a changed field's path; filters combine."""
        if offset < 0 or not 1 <= limit <= MAX_LIMIT:
            raise UsageError(f"offset must be 0 or more and limit 1 to {MAX_LIMIT}, not {offset} and {limit}")
        if layer is not None and layer not in LAYERS:
            raise UsageError(f"layer {visible(repr(layer))}: use one of {', '.join(LAYERS)}")
        if reason is not None and reason not in REASONS:
            raise UsageError(f"reason {visible(repr(reason))}: use one of {', '.join(REASONS)}")
        if outcome is not None and outcome not in OUTCOMES:
            raise UsageError(f"outcome {visible(repr(outcome))}: use one of {', '.join(repr(o) for o in OUTCOMES)}")
        where: list[str] = []
        params: list[Any] = []
        found: list[str] = []
        for column, value in (("layer", layer), ("reason", reason)):
            if value is not None:
                found.append(f"d.{column} = ?")
                params.append(value)
        if action is not None:
            found.append("(d.base_action = ? OR d.candidate_action = ?)")
            params += [action, action]
        if found:
            where.append(
                "EXISTS (SELECT 1 FROM d WHERE d.session_id = sess.session_id AND " + " AND ".join(found) + ")"
            )
        if outcome is not None:
            if outcome in ("pass", "fail"):
                where.append("change = '' AND candidate = ?")
                params.append(outcome == "pass")
            else:
                where.append("change = ?")
                params.append(outcome)
        if text:
            where.append("contains(haystack, ?)")
            params.append(text.lower())
        if differ_only:
            where.append("first_i IS NOT NULL")
        clause = " WHERE " + " AND ".join(where) if where else ""
        with self._lock:
            total = self.con.execute(f"SELECT count(*) FROM sess{clause}", params).fetchall()
            page = self.con.execute(
                "SELECT s.session_id, s.rank, s.base, s.candidate, s.change, s.n_write, s.n_read, s.n_speech, "
                "s.reps_diverged, d.layer, d.reason, coalesce(d.candidate_action, d.base_action), d.step, "
                "d.base_seq, d.candidate_seq, d.repeat "
                f"FROM (SELECT * FROM sess{clause} ORDER BY rank LIMIT ? OFFSET ?) s "
                "LEFT JOIN d ON d.i = s.first_i ORDER BY s.rank",
                [*params, limit, offset],
            ).fetchall()
        rows = []
        for sid, rank, base, cand, change, n_w, n_r, n_s, reps, *first in page:
            layer_, reason_, action_, step, bseq, cseq, rep = first
            rows.append(
                {
                    "session_id": sid,
                    "rank": rank,
                    "outcome": {"base": base, "candidate": cand, "change": change},
                    "counts": {"write": n_w, "read": n_r, "speech": n_s},
                    "first": None
                    if layer_ is None
                    else {
                        "layer": layer_,
                        "reason": reason_,
                        "action": action_,
                        "step": step,
                        "base_seq": bseq,
                        "candidate_seq": cseq,
                        "repeat": rep,
                    },
                    "repeats": None if self.repeats <= 1 else {"n": self.repeats, "equal": self.repeats - reps},
                }
            )
        return {"total": int(total[0][0]), "offset": offset, "rows": rows}

    # ---- one session -----------------------------------------------------------------------------

    def _known(self, session_id: str, repeat: int) -> dict[str, Any]:
        """The session's list row (its outcome), or a UsageError naming what is unknown."""
        if not isinstance(session_id, str) or not session_id:
            raise UsageError("name a session: id=SESSION")
        rows = self.con.execute(
            "SELECT base, candidate, change FROM sess WHERE session_id = ?", [session_id]
        ).fetchall()
        found = rows[0] if rows else None
        if found is None:
            raise UsageError(
                f"no session {visible(repr(session_id))} in the diff of {self.base!r} -> {self.candidate!r}"
            )
        if not 0 <= repeat < self.repeats:
            raise UsageError(f"session {visible(repr(session_id))} has repeats 0 to {self.repeats - 1}, not {repeat}")
        return {"base": found[0], "candidate": found[1], "change": found[2]}

    def session(self, session_id: str, repeat: int = 0) -> dict[str, Any]:
        """GET /api/session: one session (one repeat of the candidate) in two columns, rows in the order
        the differ aligned them: by commit, each layer's committed actions aligned over the whole session
        (:func:`align_by_name`) and the layers merged in the runs' order; by step, each step's actions
        (:func:`align`). A row with one side null is a gap (a missing or extra action); an action that
        did not commit (refused, failed) is shown on its side alone unless a divergence pairs it. The
        last :data:`KEPT_DETAILS` sessions asked are kept (the page asks again on j/k and back)."""
        with self._lock:
            kept = self._details.get((session_id, repeat))
            if kept is not None:
                self._details.move_to_end((session_id, repeat))
                return kept
        detail = self._session(session_id, repeat)
        with self._lock:
            self._details[(session_id, repeat)] = detail
            while len(self._details) > KEPT_DETAILS:
                self._details.popitem(last=False)
        return detail

    def details(self, keys: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
        """The detail of each (session, repeat) of ``keys``, as :meth:`session` makes it, the sessions
        staged together: what the HTML file embeds. One staging costs tens of milliseconds whatever
        its size, and one per session made the demo's report take 7 s for 90 details."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(keys), DETAILS_PER_STAGING):
            out += self._details_of(keys[start : start + DETAILS_PER_STAGING])
        return out

    def _session(self, session_id: str, repeat: int) -> dict[str, Any]:
        return self._details_of([(session_id, repeat)])[0]

    def _details_of(self, keys: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
        with self._lock, named_damage(self.store, (self.base, self.candidate)):  # a damaged page: one line
            outcomes = [self._known(session_id, repeat) for session_id, repeat in keys]
            divergences = [self._divergences(session_id, repeat) for session_id, repeat in keys]
            events = self._session_events(list(dict.fromkeys(session_id for session_id, _ in keys)))
            staged = self._staged(events)
        runs = {side: _Run(events, run) for side, run in zip(_SIDES, (self.base, self.candidate), strict=True)}
        base_rows: dict[str, list[dict[str, Any]]] = {}
        for r in staged["b"]:
            base_rows.setdefault(r["session_id"], []).append(r)
        cand_rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in staged["c"]:
            cand_rows.setdefault((r["session_id"], r["rep"]), []).append(r)
        return [
            self._detail(session_id, repeat, outcome, divs, base_rows.get(session_id, []),
                         cand_rows.get((session_id, repeat), []), runs)
            for (session_id, repeat), outcome, divs in zip(keys, outcomes, divergences, strict=True)
        ]  # fmt: skip

    def _detail(
        self,
        session_id: str,
        repeat: int,
        outcome: dict[str, Any],
        divs: list[dict[str, Any]],
        b_rows: list[dict[str, Any]],
        c_rows: list[dict[str, Any]],
        runs: dict[str, _Run],
    ) -> dict[str, Any]:
        """One session's detail from its staged actions (``b_rows``, ``c_rows``: the repeat's) and
        divergences, its events read from ``runs``."""
        pairs = self._pairs(b_rows, c_rows)
        rows = _place(pairs, divs)
        raw = {
            "base": self._raw_ids(session_id, 0, base_side=True),
            "candidate": self._raw_ids(session_id, repeat, base_side=False),
        }
        layers = {(side, r["seq"]): r["layer"] for side, rs in (("base", b_rows), ("candidate", c_rows)) for r in rs}
        for side, rs in (("base", b_rows), ("candidate", c_rows)):  # where each staged action was recorded
            raw.update({f"{side}:{r['seq']}": [r["raw_sid"], *raw[side]] for r in rs})
        out_rows: list[dict[str, Any]] = []
        first: dict[str, int | None] = dict.fromkeys(LAYERS)
        for bseq, cseq, div in rows:
            b, c = (
                None
                if seq is None
                else runs[side].event(raw.get(f"{side}:{seq}", raw[side]), seq, layers.get((side, seq)), self.config)
                for side, seq in (("base", bseq), ("candidate", cseq))
            )
            shown = None
            if div is not None:
                shown = {
                    "reason": div["reason"],
                    "layer": div["layer"],
                    "fields": div["fields"],
                    "similarity": div["similarity"],
                    "words": _word_diff(b, c) if div["reason"] == "speech_changed" else None,
                }
                if first.get(div["layer"]) is None:
                    first[div["layer"]] = len(out_rows)
            out_rows.append({"base": b, "candidate": c, "divergence": shown})
        return {
            "session_id": session_id,
            "repeat": repeat,
            "repeats": self.repeats,
            "comparison": self.comparison,
            "outcome": outcome,
            "first": first,
            "rows": out_rows,
        }

    def _divergences(self, session_id: str, repeat: int) -> list[dict[str, Any]]:
        """The session's (repeat's) divergences in the differ's order, fields parsed."""
        cur = self.con.execute(
            "SELECT base_seq, candidate_seq, reason, layer, fields, similarity FROM d "
            "WHERE session_id = ? AND repeat = ? ORDER BY i",
            [session_id, repeat],
        )
        return [
            {
                "base_seq": b,
                "candidate_seq": c,
                "reason": reason,
                "layer": layer,
                "fields": orjson.loads(fields) if fields else [],
                "similarity": sim,
            }
            for b, c, reason, layer, fields, sim in cur.fetchall()
        ]

    def _raw_ids(self, session_id: str, repeat: int, *, base_side: bool) -> list[str]:
        """The session ids a side's events of this session (and repeat) may be recorded under, in the
        order a seq is looked up: ``ID#rK`` is repeat K of ``ID`` in a run of trials (a step-mode
        replay keeps its repeats in ``ID``); the base of a comparison is its repeat 0."""
        if not base_side and repeat > 0:
            return [f"{session_id}#r{repeat}", session_id]
        return [session_id, f"{session_id}#r0"]

    def _session_events(self, session_ids: list[str]) -> pa.Table:
        """Every event of the sessions (every repeat of each) in both runs."""
        ids = sorted(
            {
                x
                for session_id in session_ids
                for x in (
                    *self._raw_ids(session_id, 0, base_side=True),
                    *(y for k in range(self.repeats) for y in self._raw_ids(session_id, k, base_side=False)),
                )
            }
        )
        table: pa.Table = self.con.sql(
            f"SELECT * FROM events WHERE run_id IN (?, ?) AND session_id IN ({', '.join('?' * len(ids))}) "
            "ORDER BY run_id, session_id, seq",
            params=[self.base, self.candidate, *ids],
        ).to_arrow_table()
        return table

    def _staged(self, events: pa.Table) -> dict[str, list[dict[str, Any]]]:
        """The session's model actions staged as the differ stages them (its ``b`` and ``c``: layer,
        repeat, committed, digest), by the differ's own staging over these events only."""
        mini = self._mini
        for (name,) in mini.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            mini.execute(f'DROP TABLE "{name}"')  # the previous session's
        mini.register("events_arrow", events)
        try:
            mini.execute("CREATE TABLE events AS SELECT * FROM events_arrow")
        finally:
            mini.unregister("events_arrow")
        # what each run is, as its events say (the differ checked that the whole run says the same)
        base, cand = (replace(shape(mini, run), has_llm=self.has_llm[run]) for run in (self.base, self.candidate))
        mark(mini, self.base, self.candidate)
        stage(mini, self.config, base, cand, by_commit=self.comparison == "commit")
        out: dict[str, list[dict[str, Any]]] = {}
        for table in ("b", "c"):
            cur = mini.execute(
                f"SELECT session_id, raw_sid, step, seq, name, digest, status, rep, layer, committed FROM {table} "
                "ORDER BY rep, seq"
            )
            names = [x[0] for x in cur.description]
            out[table] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return out

    def _pairs(
        self, base: list[dict[str, Any]], cand: list[dict[str, Any]]
    ) -> list[list[tuple[int | None, int | None]]]:
        """The (base seq, candidate seq) pairs of the differ's alignment, one list per stream it aligned
        apart (by commit: each layer's committed actions, and each uncommitted action alone; by step:
        each step), each in its own order."""
        streams: list[list[tuple[int | None, int | None]]] = []
        if self.comparison == "commit":
            for layer in LAYERS:
                bs = [r for r in base if r["layer"] == layer and r["committed"]]
                cs = [r for r in cand if r["layer"] == layer and r["committed"]]
                streams.append(_aligned(bs, cs, by_name=True))
            streams += [[(r["seq"], None)] for r in base if not r["committed"]]
            streams += [[(None, r["seq"])] for r in cand if not r["committed"]]
            return streams
        steps = list(dict.fromkeys([r["step"] for r in base] + [r["step"] for r in cand]))
        for step in steps:
            bs = [r for r in base if r["step"] == step]
            cs = [r for r in cand if r["step"] == step]
            streams.append(_aligned(bs, cs, by_name=False))
        return streams

    # ---- one model call --------------------------------------------------------------------------

    def call(self, side: str, session_id: str, repeat: int, seq: int) -> dict[str, Any]:
        """GET /api/call: one llm event's whole request (its messages and tools, rebuilt from linear
        storage as ``sdbctl show --full`` prints it) and its answer."""
        if side not in _SIDES:
            raise UsageError(f"side {visible(repr(side))}: use base or candidate")
        with self._lock, named_damage(self.store, (self.base, self.candidate)):
            self._known(session_id, repeat)
            run = self.base if side == "base" else self.candidate
            ids = self._raw_ids(session_id, repeat if side == "candidate" else 0, base_side=side == "base")
            table = self.con.sql(
                "SELECT * FROM events WHERE run_id = ? AND kind = 'llm' "
                f"AND session_id IN ({', '.join('?' * len(ids))}) ORDER BY run_id, session_id, seq",
                params=[run, *ids],
            ).to_arrow_table()
        for row in event_dicts(table, whole=True):
            if row["seq"] == seq:
                payload = row["payload"] if isinstance(row["payload"], dict) else {}
                return {
                    "side": side,
                    "seq": seq,
                    "model": row["model"],
                    "request": payload.get("request"),
                    "response": payload.get("response"),
                    "latency_ms": row["latency_ms"],
                    "tokens_in": row["tokens_in"],
                    "tokens_out": row["tokens_out"],
                }
        raise UsageError(
            f"session {visible(repr(session_id))} of run {run!r} (repeat {repeat}) has no llm event with seq {seq}"
        )

    def close(self) -> None:
        """Release the DuckDB connection."""
        with self._lock:
            self.con.close()
            self._mini.close()


# ---- helpers -------------------------------------------------------------------------------------


def _applied(config: DiffConfig, result: DiffResult) -> DiffConfig:
    """``config`` with the layer rules the diff applied (its summary's ``rules``: the read globs, the
    actions the workload's code declares pure, the speech globs), so an action's layer here is the
    differ's."""
    rules = {r.rule: r for r in result.summary.rules if r.obeyed}
    out = replace(config, read_only=(), pure=())
    if "read" in rules:
        out = replace(out, read_only=rules["read"].values)
    if "pure" in rules:
        out = replace(out, pure=rules["pure"].values)
    if "speech" in rules:
        out = replace(out, speech=rules["speech"].values)
    return out


def _aligned(
    base: Sequence[dict[str, Any]], cand: Sequence[dict[str, Any]], *, by_name: bool
) -> list[tuple[int | None, int | None]]:
    """One stream's pairs as the differ makes them: the same actions in another order pair by position
    (reordered); else by commit :func:`align_by_name`, by step one action each pairs directly and
    more are :func:`align`-ed."""
    bd = [int(r["digest"]) for r in base]
    cd = [int(r["digest"]) for r in cand]
    pairs: list[Pair]
    if not by_name and len(bd) == 1 and len(cd) == 1:
        pairs = [Pair(0, 0, bd[0] == cd[0])]
    elif reordered(bd, cd) and (by_name or all(r["status"] == "ok" for r in cand)):
        pairs = [Pair(k, k, bd[k] == cd[k]) for k in range(len(bd))]
    elif by_name:
        pairs = align_by_name(bd, [r["name"] for r in base], cd, [r["name"] for r in cand])
    else:
        pairs = align(bd, cd)
    return [
        (
            base[p.base]["seq"] if p.base is not None else None,
            cand[p.candidate]["seq"] if p.candidate is not None else None,
        )
        for p in pairs
    ]


Row = tuple[int | None, int | None, dict[str, Any] | None]


def _place(streams: list[list[tuple[int | None, int | None]]], divs: list[dict[str, Any]]) -> list[Row]:
    """The streams' pairs merged into one list of rows in the runs' order, each with its divergence.

    Each stream keeps its own order: a row with a base action sits at that action's seq; a candidate-only
    row right after the stream's previous row (or, leading its stream, after the last paired candidate
    action before it). A divergence that pairs an unpaired action with its uncommitted twin
    (gate_changed, invalid) fills the row's other side; one that no action row holds (a state_changed)
    is a row of its own."""
    by_pair = {(d["base_seq"], d["candidate_seq"]): d for d in divs}
    by_base = {d["base_seq"]: d for d in divs if d["base_seq"] is not None}
    by_cand = {d["candidate_seq"]: d for d in divs if d["candidate_seq"] is not None}
    used: set[int] = set()
    twins: set[tuple[str, int]] = set()
    placed: list[tuple[int, Row]] = []  # (stream, row)
    for k, stream in enumerate(streams):
        for b, c in stream:
            d = by_pair.get((b, c))
            if d is None and c is None and b is not None:
                d = by_base.get(b)
            if d is None and b is None and c is not None:
                d = by_cand.get(c)
            if d is not None and id(d) not in used:
                used.add(id(d))
                if b is None and d["base_seq"] is not None:
                    b = d["base_seq"]
                    twins.add(("b", b))
                if c is None and d["candidate_seq"] is not None:
                    c = d["candidate_seq"]
                    twins.add(("c", c))
            else:
                d = None
            placed.append((k, (b, c, d)))

    def twin(row: Row) -> bool:
        """An uncommitted action a divergence pairs as a twin: shown in that row, not alone."""
        b, c, d = row
        return d is None and (("b", b) in twins if c is None else ("c", c) in twins if b is None else False)

    placed = [(k, row) for k, row in placed if not twin(row)]
    lone = len(streams)
    for d in divs:  # a divergence of no action row (a state): a row of its own
        if id(d) not in used:
            placed.append((lone, (d["base_seq"], d["candidate_seq"], d)))
            lone += 1
    paired = sorted((c, b) for _, (b, c, _) in placed if b is not None and c is not None)
    paired_c = [c for c, _ in paired]
    previous: dict[int, tuple[float, int, int]] = {}
    keyed: list[tuple[tuple[float, int, int], int, Row]] = []
    for n, (k, row) in enumerate(placed):
        b, c, _ = row
        if b is not None:
            key: tuple[float, int, int] = (float(b), 0, c if c is not None else -1)
        elif k in previous:
            key = (previous[k][0], 1, c if c is not None else -1)
        else:
            at = bisect_left(paired_c, c if c is not None else -1)
            key = (float(paired[at - 1][1]) if at else -1.0, 1, c if c is not None else -1)
        previous[k] = key
        keyed.append((key, n, row))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [row for _, _, row in keyed]


class _Run:
    """One run's events of one session (every raw session id of it), indexed for :meth:`event`."""

    def __init__(self, events: pa.Table, run: str) -> None:
        self.by_seq: dict[str, dict[int, dict[str, Any]]] = {}
        self.children: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.order: dict[str, list[int]] = {}
        for row in events.filter(pc.equal(events["run_id"], pa.scalar(run, pa.string()))).to_pylist():
            try:
                row["payload"] = orjson.loads(row["payload"])
            except orjson.JSONDecodeError:
                row["payload"] = None
            sid = row["session_id"]
            row["kind"] = str(row["kind"])
            self.by_seq.setdefault(sid, {})[row["seq"]] = row
            self.order.setdefault(sid, []).append(row["seq"])  # the events come in seq order
            if row["parent"] is not None:
                self.children.setdefault((sid, row["parent"]), []).append(row)

    def event(self, raw_ids: list[str], seq: int, layer: str | None, config: DiffConfig) -> dict[str, Any] | None:
        """The EVENT of ``seq`` (docs/view.md): an action with its effects and guard verdicts (the events
        whose parent it is), the states it led to (its children, and the states with no parent recorded
        after it and before the next action), and the llm event it answers."""
        sid = next((x for x in raw_ids if seq in self.by_seq.get(x, {})), None)
        if sid is None:
            return None
        events = self.by_seq[sid]
        row = events[seq]
        payload = row["payload"] if isinstance(row["payload"], dict) else {}
        kind, name = row["kind"], str(row["name"])
        args = payload.get("args") if kind == "action" else payload
        layer = layer or (config.layer(name) if kind == "action" else "write")
        effects: list[dict[str, Any]] = []
        gates: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        if kind == "action":
            for e in self.children.get((sid, seq), []):
                p = e["payload"] if isinstance(e["payload"], dict) else {}
                if e["kind"] == "effect":
                    effects.append({"name": e["name"], "status": e["status"], "result": p.get("result")})
                elif e["kind"] == "gate":
                    gates.append(
                        {
                            "name": e["name"],
                            "decision": p.get("decision"),
                            "reason": p.get("reason"),
                            "status": e["status"],
                        }
                    )
                elif e["kind"] == "state":
                    states.append({"name": e["name"], "data": p})
            order = self.order[sid]
            for s in order[bisect_right(order, seq) :]:
                e = events[s]
                if e["kind"] == "action":
                    break
                if e["kind"] == "state" and e["parent"] is None:
                    states.append({"name": e["name"], "data": e["payload"]})
        parent = row["parent"]
        llm_seq = parent if parent is not None and parent in events and events[parent]["kind"] == "llm" else None
        return {
            "seq": seq,
            "kind": kind,
            "name": name,
            "step": row["step"],
            "status": row["status"],
            "layer": layer,
            "args": args,
            "text": speech_text(args) if kind == "action" and layer == "speech" else None,
            "effects": effects,
            "gates": gates,
            "states": states,
            "llm_seq": llm_seq,
        }


def _word_diff(base: dict[str, Any] | None, cand: dict[str, Any] | None) -> list[list[str]]:
    """Two speech texts' word diff: ``[op, text]`` runs, op ``=`` (both), ``-`` (base only), ``+``
    (candidate only); the words keep the whitespace that follows them, so the runs join back to each text."""
    old = re.findall(r"\S+\s*|\s+", (base or {}).get("text") or "")
    new = re.findall(r"\S+\s*|\s+", (cand or {}).get("text") or "")
    out: list[list[str]] = []

    def put(op: str, words: list[str]) -> None:
        if not words:
            return
        if out and out[-1][0] == op:
            out[-1][1] += "".join(words)
        else:
            out.append([op, "".join(words)])

    matcher = SequenceMatcher(a=[w.strip() for w in old], b=[w.strip() for w in new], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            put("=", new[j1:j2])
        else:
            put("-", old[i1:i2])
            put("+", new[j1:j2])
    return out
