"""What a diff returns: the divergences, and the typed summary that ``--json``, the saved
``summary.json``, the gate and the report all read (serialised by :func:`sdb.results.as_json`)."""

from __future__ import annotations

import heapq
import os
import shutil
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, overload

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sdbctl.sdb.diff._config import Rule
from sdbctl.sdb.diff._drift import DriftResult
from sdbctl.sdb.diff._outcomes import OutcomeSummary
from sdbctl.sdb.results import OMIT_NONE, SKIP, as_json

REASONS = (
    "tool_changed",
    "args_changed",
    "missing",
    "extra",
    "reordered",
    "parse_failed",
    "invalid",
    "gate_changed",
    "state_changed",
    "speech_changed",
)


@dataclass(kw_only=True)
class Divergence:
    """One place where the candidate's actions differ from the base's: where, expected, found, why."""

    session_id: str  #: the session (repeat suffix removed)
    step: str | None  #: the step key of the action (base side where both have one)
    repeat: int  #: the candidate's repeat index (0 without repeats)
    base_seq: int | None  #: seq of the base's action (None: the base has none here)
    candidate_seq: int | None  #: seq of the candidate's action (None: the candidate has none here)
    reason: str  #: one of :data:`REASONS`
    base_action: str | None  #: action name on the base side (for state_changed: the states entered)
    candidate_action: str | None  #: action name on the candidate side
    pattern: str | None  #: the runtime pattern that emitted it
    fields: list[dict[str, Any]] = field(default_factory=list)  #: args_changed: ``{path, old, new}`` each
    layer: str = "write"  #: the action's class: write, read or speech
    similarity: float | None = None  #: speech: the texts' similarity in [0, 1]
    after_first: bool = False  #: not the first divergence of its session, repeat and layer
    #: its place in the session's alignment (for sorting; not in the JSON)
    order: int = field(default=0, repr=False, compare=False, metadata={SKIP: True})

    def changes(self) -> str:
        """The changed fields as one line, ``path: old -> new; ...`` (every output shows them so)."""
        return "; ".join(f"{f['path']}: {f['old']} -> {f['new']}" for f in self.fields)

    def as_dict(self) -> dict[str, Any]:
        """The divergence's JSON: the two action names nested as ``action {base, candidate}``, as
        ``--json`` has always printed them (the Parquet file keeps them flat)."""
        return {
            "session_id": self.session_id,
            "step": self.step,
            "repeat": self.repeat,
            "base_seq": self.base_seq,
            "candidate_seq": self.candidate_seq,
            "reason": self.reason,
            "layer": self.layer,
            "action": {"base": self.base_action, "candidate": self.candidate_action},
            "pattern": self.pattern,
            "fields": self.fields,
            "similarity": self.similarity,
            "after_first": self.after_first,
        }


#: a diff with at most this many divergences keeps them once read whole (every output of a small diff
#: reads them several times); a larger one reads them again from its file on every pass
KEPT = 10_000
_READ = 4096  #: rows read from the file at a time


def _divergence(row: dict[str, Any], order: int) -> Divergence:
    """A row of the divergences file as a :class:`Divergence` (``fields`` parsed back from JSON)."""
    row.pop("base_run", None)
    row.pop("candidate_run", None)
    row["fields"] = orjson.loads(row["fields"]) if row["fields"] else []
    return Divergence(**row, order=order)


def _remove(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # never from a forked child (sdb.diff._parallel) that inherited the object
        shutil.rmtree(folder, ignore_errors=True)


class Divergences(Sequence[Divergence]):
    """The divergences of a diff in the order every output lists them (by session, repeat, then step or
    place in the session; :mod:`sdb.diff._found`), read back from the Parquet file the diff wrote:
    never all in memory at once unless a caller asks for them whole, and then only up to
    :data:`KEPT` (beyond, each pass streams the file again). ``len`` costs nothing; :meth:`first`
    reads a bounded sample. The file is the one the diff saves (``divergences.parquet``); its
    temporary folder goes when this object does."""

    def __init__(self, path: Path, count: int, folder: Path | None = None) -> None:
        self.path = path  #: the Parquet file
        self._count = count
        self._kept: list[Divergence] | None = [] if count == 0 else None
        if folder is not None:
            weakref.finalize(self, _remove, folder, os.getpid())

    def __len__(self) -> int:
        return self._count

    def batches(self) -> Iterator[list[Divergence]]:
        """The divergences in order, a few thousand at a time."""
        if self._kept is not None:
            yield self._kept
            return
        start = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=_READ):
            rows = batch.to_pylist()
            yield [_divergence(row, start + i) for i, row in enumerate(rows)]
            start += len(rows)

    def __iter__(self) -> Iterator[Divergence]:
        if self._kept is None and self._count <= KEPT:
            self._kept = [d for batch in self.batches() for d in batch]
        for batch in self.batches():
            yield from batch

    @overload
    def __getitem__(self, index: int) -> Divergence: ...

    @overload
    def __getitem__(self, index: slice) -> list[Divergence]: ...

    def __getitem__(self, index: int | slice) -> Divergence | list[Divergence]:
        if self._kept is None and self._count <= KEPT:
            self._kept = [d for batch in self.batches() for d in batch]
        if self._kept is not None:
            return self._kept[index]
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            wanted = set(range(start, stop, step))
            found = {i: d for i, d in self._enumerate(max(wanted, default=-1)) if i in wanted}
            return [found[i] for i in range(start, stop, step)]
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError("divergence index out of range")
        return next(d for i, d in self._enumerate(position) if i == position)

    def _enumerate(self, last: int) -> Iterator[tuple[int, Divergence]]:
        """(position, divergence) up to position ``last``: the file read no further."""
        for i, d in enumerate(self):
            if i > last:
                return
            yield i, d

    def first(self, n: int, layers: Collection[str] = ()) -> list[Divergence]:
        """The first ``n`` divergences in the order the tables print them: those in ``layers`` (the
        gated ones) first, in each the first of its session, repeat and layer (``after_first`` false)
        first, else in order. Reads the file once, keeping ``n``; beyond :data:`KEPT` divergences, the
        order is taken over the two columns it needs and only the ``n`` rows become objects (a table of
        3 of 50,000 divergences made them all: a second)."""

        def key(item: tuple[int, Divergence]) -> tuple[bool, bool, int]:
            i, d = item
            return (d.layer not in layers, d.after_first, i)

        if n <= 0:
            return []
        if self._kept is not None or self._count <= KEPT:
            return [d for _, d in heapq.nsmallest(n, enumerate(self), key=key)]
        table = pq.read_table(self.path, columns=["layer", "after_first"])
        gated = pc.is_in(table["layer"], value_set=pa.array(list(layers), pa.string()))
        order = pa.table(
            {
                "other": pc.invert(gated),
                "after_first": table["after_first"],
                "i": pa.array(range(len(table)), pa.int64()),
            }
        )
        keys: list[tuple[str, Literal["ascending", "descending"]]] = [
            ("other", "ascending"),
            ("after_first", "ascending"),
            ("i", "ascending"),
        ]
        picked = cast(list[int], order.take(pc.sort_indices(order, keys)[:n])["i"].to_pylist())
        rows = pq.read_table(self.path).take(pa.array(picked, pa.int64())).to_pylist()
        return [_divergence(row, i) for i, row in zip(picked, rows, strict=True)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Divergences({self._count} in {self.path})"


def divergences_from(path: Path, count: int, folder: Path | None = None) -> Divergences:
    """The divergences of the file at ``path`` (``count`` rows), its ``folder`` removed with them."""
    return Divergences(path, count, folder)


@dataclass(kw_only=True)
class LayerCounts:
    """One layer's figures (the summary's headline figures count the configured layers together)."""

    steps_compared: int  #: units compared: a (step, repeat) by step, an aligned position by commit
    steps_diverged: int  #: units with a divergence
    sessions_compared: int  #: sessions with a unit compared
    sessions_diverged: int  #: sessions with a unit diverged
    divergences: int  #: the layer's divergences
    #: by commit: side (base, candidate) -> status -> the layer's uncommitted actions
    attempts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(kw_only=True)
class FirstDivergence:
    """The first divergence of a session (repeat 0, the headline layers): where to start reading."""

    step: str | None  #: its step key
    reason: str  #: one of :data:`REASONS`
    layer: str  #: write, read or speech
    base_seq: int | None  #: seq of the base's action
    candidate_seq: int | None  #: seq of the candidate's action
    action: str | None  #: the candidate's action name, else the base's


@dataclass(kw_only=True)
class TerminalChange:
    """A session whose last state differs between the runs."""

    session_id: str  #: the session
    base: str  #: the base's last state
    candidate: str  #: the candidate's last state


@dataclass(kw_only=True)
class DiffSummary:
    """The figures of a diff. The headline figures (``steps_*``, ``sessions_*``, ``by_reason``,
    ``by_action``, ``by_pattern``) count the layers in ``layers``; ``by_layer`` has each layer's own."""

    base_run: str  #: the base run's id
    candidate_run: str  #: the candidate run's id
    layers: list[str]  #: the layers the headline figures (and the gate) count
    repeats: int  #: the candidate's repeats (1 without)
    steps_compared: int  #: units compared (see :class:`LayerCounts`), every repeat included
    steps_diverged: int  #: units with a divergence
    step_divergence_rate: float  #: steps_diverged / steps_compared (0.0 when nothing was compared)
    sessions_compared: int  #: sessions with a unit compared
    session_ids: list[str]  #: those sessions, sorted
    sessions_diverged: int  #: sessions with a unit diverged
    session_divergence_rate: float  #: sessions_diverged / sessions_compared
    divergences: int  #: every divergence, in every layer
    errors: int  #: the candidate's provider errors (their steps are not compared)
    parse_failures: int  #: the candidate's parse failures beyond the base's
    attempts: dict[str, dict[str, int]]  #: by commit: side -> status -> uncommitted actions (headline layers)
    by_layer: dict[str, LayerCounts]  #: layer -> its figures, for every layer
    by_reason: dict[str, int]  #: reason -> divergences (headline layers)
    by_action: dict[str, int]  #: action -> divergences (headline layers)
    by_pattern: dict[str, int]  #: runtime pattern -> divergences (headline layers; "" for none)
    by_reason_all_layers: dict[str, int]  #: reason -> divergences, every layer
    first_divergence: dict[str, FirstDivergence]  #: session -> its first divergence
    terminal_changes: list[TerminalChange]  #: sessions whose last state differs
    pass_k: float | None  #: with repeats: the share of sessions with no divergence in any repeat
    comparison: Literal["commit", "step"]  #: by commit (both runs ran the agent) or by step
    outcomes: OutcomeSummary | None  #: outcome flips and their test (None without outcomes on both sides)
    partial: list[str]  #: the runs compared although partial (--allow-partial)
    #: run -> the base's sessions it lacks, left out of every figure (--allow-partial; a noise run's:
    #: of the drift test)
    left_out: dict[str, int] = field(default_factory=dict)
    #: the candidate against the noise floor; None, and left out of the JSON, without one
    drift: DriftResult | None = field(default=None, metadata={OMIT_NONE: True})
    cached_answers: int = 0  #: the candidate's answers that came from a response cache, not its model
    answers: int = 0  #: the candidate's answers (llm events)
    #: the rules of the verdict (layers, success) and where each came from; obeyed false: a manifest's
    #: copy that differs, shown only
    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiffSummary:
        """A summary read back from its JSON (a saved ``summary.json``); ValueError when it is not one."""
        try:
            values = dict(data)
            values["by_layer"] = {k: LayerCounts(**v) for k, v in values["by_layer"].items()}
            values["first_divergence"] = {k: FirstDivergence(**v) for k, v in values["first_divergence"].items()}
            values["terminal_changes"] = [TerminalChange(**t) for t in values["terminal_changes"]]
            outcomes, drift = values.get("outcomes"), values.get("drift")
            values["outcomes"] = OutcomeSummary.from_json(outcomes) if outcomes is not None else None
            values["drift"] = DriftResult.from_json(drift) if drift is not None else None
            values["rules"] = [Rule(**{**r, "values": tuple(r["values"])}) for r in values.get("rules", [])]
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a diff summary: {exc}") from None


@dataclass
class DiffResult:
    """A diff: its summary, its divergences and the candidate's provider errors."""

    base_run: str
    candidate_run: str
    summary: DiffSummary
    divergences: Divergences  #: read back from the diff's file (see :class:`Divergences`)
    errors: list[dict[str, Any]]  #: the candidate's provider errors: ``{session_id, step, seq, message}``
    session_rates: dict[str, float] = field(default_factory=dict)  #: per session: share of units diverged

    def gated(self) -> list[Divergence]:
        """The divergences in the layers the summary's headline figures (and the gate) count."""
        return [d for d in self.divergences if d.layer in self.summary.layers]

    def as_dict(self) -> dict[str, Any]:
        """What ``sdbctl diff --json`` prints."""
        return {
            "summary": as_json(self.summary),
            "divergences": [d.as_dict() for d in self.divergences],
            "errors": self.errors,
        }
