"""Where the boundary is weak: read a run's divergences and name the actions, fields, reasons and
patterns they concentrate in, each with a recommendation.

A recommendation is given only when its premise holds in the run. Advice in terms of a pattern ("P4's
policy gate") needs events of that pattern in the run or its bases; advice about the action's code
(its signature, ``rounding=``, ``Literal[...]``, ``pure=True``) needs a run recorded by agent code (a
workload, or events tagged by the pattern library). An imported run has neither: it is advised from
what it has (its actions, fields and their values, layers, outcome flips) in terms of the config keys
and commands that apply to any run. Every command suggested is one a user can paste.

**What it says comes from the runs.** A saved diff (``diffs/<base>..<run>/``) only says which bases the
run was diffed against: its divergences and outcomes are computed again from the two runs, as ``gate``
does, with the project's diff and outcome config. A store is data, so a forged or malformed
``summary.json`` or ``divergences.parquet`` changes nothing diagnose says.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.diff import DiffResult, diff_runs, divergence_table, load_config, load_outcome_config
from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.results import as_json
from sdbctl.sdb.store import Store, connect, query_arrow


@dataclass(frozen=True)
class Finding:
    share: float
    where: str
    evidence: str
    recommendation: str


def _kind(values: list[Any]) -> str:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values if v is not None):
        return "numeric"
    if all(isinstance(v, str) for v in values if v is not None):
        return "free-text" if len({v for v in values if v is not None}) > 3 else "categorical"
    return "structured"


@dataclass(frozen=True)
class _Premises:
    """What advice may assume of the run: the pattern tags its events and its bases' carry, and whether
    agent code recorded them (a run naming an agent, or events tagged by the pattern library)."""

    patterns: frozenset[str]
    code: bool
    run: str

    def command(self, *args: str) -> str:
        """An sdbctl command line as a user pastes it into a shell (ids quoted where they need it)."""
        return "`" + shlex.join(["sdbctl", *args]) + "`"


def _names(rows: list[dict[str, Any]]) -> str:
    """The actions of ``rows``, most frequent first (at most three)."""
    counts = Counter(_action(r) for r in rows)
    return ", ".join(name for name, _ in counts.most_common(3)) + (" ..." if len(counts) > 3 else "")


def _action(r: dict[str, Any]) -> str:
    return str(r["candidate_action"] or r["base_action"] or "?")


def _critical(what: str, them: str = "it") -> str:
    """The advice to make the gate fail on any divergence of an action (any run can take it)."""
    return f"list {what} in [gate] critical_actions so the gate fails on any divergence of {them}"


def _reason_advice(reason: str, rows: list[dict[str, Any]], premises: _Premises) -> str:
    """The advice for divergences of ``reason``: in terms of the patterns the run uses, else of the
    actions it has and the config keys any run can use."""
    names = _names(rows)
    p = premises.patterns
    if reason == "parse_failed":
        code = " and keep the boundary's reject handing the failure back" if premises.code else ""
        p4 = " (P4 supervisor restarts the step)" if "P4" in p else ""
        return f"the model's answers stop parsing: ask for native tool calls (or structured output){code}{p4}"
    if reason == "invalid":
        return (
            "answers parse but break the action's schema: send the schema as the tool definition and tighten "
            "it (enums, bounds) so the verifier rejects early"
        )
    if reason == "gate_changed":
        if "P4" in p:
            return (
                "the model now lands on the other side of a guard: keep P4's policy gate in front of the side "
                "effect and mark the action critical so the gate fails CI on it"
            )
        return f"the model now lands on the other side of a guard ({names}): " + _critical("it")
    if reason == "state_changed" and "P5" in p:
        return (
            "episodes take another path through their states: move the step behind a P5 transition, "
            "where only legal (state, action) pairs can commit"
        )
    if reason == "state_changed":
        return "episodes take another path through their states: the first state_changed of a session shows where"
    spines = [s for s in ("P5", "P3") if s in p]  # the state spines the run has
    if reason == "missing" and spines:
        where = " or ".join({"P5": "a P5 transition", "P3": "a P3 log entry"}[s] for s in spines)
        return f"actions disappear: make the step {where} so a skipped step is visible"
    if reason == "missing":
        return f"the candidate skips actions the base took ({names}): if one must not be skipped, " + _critical("it")
    if reason == "extra" and "P4" in p:
        p6 = " (and P6 approval if critical)" if "P6" in p else ""
        return f"actions appear that the base never took: bound them with P4's gate{p6}"
    if reason == "extra":
        return f"actions appear that the base never took ({names}): if one must not run unchecked, " + _critical("it")
    if reason == "reordered" and spines:
        through = " or ".join({"P3": "a P3 log", "P5": "P5 transitions"}[s] for s in reversed(spines))
        return f"the same actions come in another order: sequence them through {through}"
    if reason == "reordered":
        return f"the same actions come in another order ({names}): if the order matters, " + _critical("them", "them")
    if reason == "tool_changed":
        return f"the model picks another tool for the same step ({names}): narrow the tools offered at that step"
    return "look at the divergences of this reason"


def _field_advice(action: str, path: str, kind: str, pairs: list[tuple[Any, Any]], premises: _Premises) -> str:
    """The advice for a field that changed: the action's code when the run has code, else the
    ``[diff.actions.NAME]`` keys and the values the run shows."""
    field = f"{action}.{path}"
    if premises.code:
        p4 = ", and bound it with P4's policy gate" if "P4" in premises.patterns else ""
        return {
            "free-text": f"constrain {field} with an enum or a pattern in the action's signature, or move "
            "the free text out of the action (the differ can then normalise or ignore it)",
            "numeric": f"declare rounding for {field} (rounding={{'{path}': N}}) or a numeric tolerance{p4}",
            "categorical": f"make {field} an enum (Literal[...]) and watch it as a critical field",
        }.get(kind, f"split {field} into typed fields the schema can check")
    table = f"[diff.actions.{action}]"
    if kind == "numeric":
        steps = [abs(n - o) for o, n in pairs if _number(o) and _number(n)]
        largest = f" (the largest change seen: {max(steps):g})" if steps else ""
        return (
            f"if small changes of {field} are harmless, declare {table} numeric_tolerance{largest}; "
            "if none is, " + _critical(action)
        )
    if kind == "free-text":
        return (
            f'{field} holds free text: compare it with {table} text = ["case", "whitespace"], '
            f'or ignore = ["{path}"] if it does not change what {action} does'
        )
    if kind == "categorical":
        old, new = pairs[0]
        return f"{field} changed ({_short(old)} -> {_short(new)}): if that matters, " + _critical(action)
    return (
        f'{field} is structured: {table} unordered = ["{path}"] if its order does not matter, '
        "ignore = [...] for the parts that do not"
    )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _short(v: Any, width: int = 40) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= width else text[: width - 3] + "..."


# an action named as a lookup (get_user, searchFlights): the read layer is where it would belong
_LOOKUP = re.compile(r"(?:get|search|list|find|lookup|read|fetch|query|retrieve|view)(?:[_\-.A-Z0-9]|$)")


def _lookup_findings(rows: list[dict[str, Any]], premises: _Premises) -> list[Finding]:
    """Write-layer divergences of actions named as lookups: no rule declares them read-only, so they
    count as writes (and a lookup inserted or skipped reads as a changed write)."""
    out = []
    for name, n in Counter(_action(r) for r in rows).most_common():
        if not _LOOKUP.match(name):
            continue
        reasons = Counter(r["reason"] for r in rows if _action(r) == name)
        how = ", ".join(f"{reason} {k}" for reason, k in reasons.most_common())
        where = "pure=True on the action, or " if premises.code else ""
        out.append(
            Finding(
                n / len(rows),
                f"action {name}",
                f"{n / len(rows):.0%} of divergences are of {name} ({how}), which counts as a write",
                f'if {name} only reads, declare it read-only ({where}[diff] read_only = ["{name}"]): '
                "reads are reported apart and not gated by default",
            )
        )
    return out


def diagnose(store: Store, run: str, known_patterns: Collection[str] = ()) -> dict[str, Any]:
    """Findings for ``run`` as a candidate (against the bases of its stored diffs, recomputed: see the
    module docstring), most important first. ``known_patterns``: the tags ``sdbctl patterns show``
    describes, the only ones it is pointed to."""
    run = store.manifest(run).run_id  # an unknown run: the one error (and did-you-mean) of every command
    against = _diffed_against(store, run)
    if not against:
        raise SdbError(f"run {run!r} has no stored divergences; run `sdbctl diff BASE {run}` first")
    results = _recomputed(store, against, run)
    rows = [row for result in results.values() for row in divergence_table(result).to_pylist()]
    if not rows:
        return {"run": run, "bases": against, "divergences": 0, "by_layer": {}, "by_action": {}, "findings": []}
    bases = sorted({str(r["base_run"]) for r in rows})
    premises = _premises(store, connect(store, runs=[run, *bases]), run, bases)
    all_rows = rows
    layer_counts = Counter(r.get("layer") or "write" for r in all_rows)
    writes = [r for r in all_rows if (r.get("layer") or "write") == "write"]
    rows = writes or all_rows  # the write layer leads; speech and reads are reported after it
    total = len(rows)
    findings: list[Finding] = []
    fields: Counter[tuple[str, str]] = Counter()
    pairs: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
    for r in rows:
        if r["reason"] != "args_changed":
            continue
        for f in json.loads(r["fields"] or "[]"):
            key = (_action(r), f["path"].split("[")[0])
            fields[key] += 1
            pairs.setdefault(key, []).append((f.get("old"), f.get("new")))
    for (action, path), n in fields.most_common(3):
        share = n / total
        kind = _kind([v for pair in pairs[(action, path)] for v in pair])
        findings.append(
            Finding(
                share,
                f"{action}.{path}",
                f"{share:.0%} of divergences are {kind} argument changes of {action}.{path} ({n} of {total})",
                _field_advice(action, path, kind, pairs[(action, path)], premises),
            )
        )
    for reason, n in Counter(r["reason"] for r in writes).most_common():  # write advice, for writes only
        if reason == "args_changed" and fields:
            continue
        findings.append(
            Finding(
                n / total,
                reason,
                f"{n / total:.0%} of divergences are {reason} ({n} of {total})",
                _reason_advice(reason, [r for r in writes if r["reason"] == reason], premises),
            )
        )
    tagged = Counter(r["pattern"] for r in rows if r["pattern"])  # untagged events have no pattern to read
    if tagged and (top := tagged.most_common(1)[0])[0] in known_patterns:
        findings.append(
            Finding(
                top[1] / total,
                f"pattern {top[0]}",
                f"{top[1] / total:.0%} of divergences are in events tagged {top[0]}",
                f"read {premises.command('patterns', 'show', top[0])} for what a divergence means there",
            )
        )
    findings += _lookup_findings(writes, premises)
    actions = Counter(_action(r) for r in rows)
    findings.sort(key=lambda f: -f.share)
    lead = _outcome_findings(premises, {b: results[b] for b in bases}, all_rows)
    others = {k: v for k, v in layer_counts.items() if k != "write"}
    tail = [
        Finding(
            n / len(all_rows),
            f"layer {layer}",
            f"{n} of {len(all_rows)} divergences are in the {layer} layer (not gated by default)",
            "speech is compared by similarity: raise or lower [diff] speech_threshold if it flags rewordings"
            if layer == "speech"
            else "reads change what the model saw, not what it did; declare them pure=True or in [diff] read_only"
            if premises.code
            else "reads change what the model saw, not what it did; --layers write,read on diff and gate counts them",
        )
        for layer, n in sorted(others.items())
    ]
    return {
        "run": run,
        "bases": bases,
        "divergences": len(all_rows),
        "by_layer": dict(sorted(layer_counts.items())),
        "by_action": dict(actions.most_common()),
        "findings": as_json([*lead, *findings, *tail]),
    }


def _premises(store: Store, con: Any, run: str, bases: list[str]) -> _Premises:
    """What the run and its bases are: their events' pattern tags, and whether agent code recorded
    them. A base that is gone or damaged adds nothing."""
    known = []
    agent = False
    for r in [run, *bases]:
        try:
            agent = agent or store.manifest(r).agent is not None
        except SdbError:
            continue
        known.append(r)
    listed = ", ".join(f"'{r}'" for r in known)  # ids of runs found: checked names, no quote in them
    tags = query_arrow(con, f"SELECT DISTINCT pattern FROM events WHERE run_id IN ({listed})").column(0)
    patterns = frozenset(str(t) for t in tags.to_pylist() if t)
    return _Premises(patterns, agent or bool(patterns), run)


def _diffed_against(store: Store, run: str) -> list[str]:
    """The runs ``run`` was diffed against, by the saved diffs' folders (a damaged run is left out,
    with a warning naming it)."""
    saved = {path.rsplit("/", 1)[0] for path in store.divergence_paths()}
    return [m.run_id for m in store.manifests() if store.diff_dir(m.run_id, run) in saved]


def _recomputed(store: Store, bases: list[str], run: str) -> dict[str, DiffResult]:
    """The diff of ``run`` against each of ``bases``, computed from the runs as ``gate`` computes it
    (the project's config; a partial run's lacking sessions left out), never read from a saved diff."""
    config, outcomes = load_config(), load_outcome_config()
    return {
        base: diff_runs(store, base, run, config, save=False, allow_partial=True, outcome_config=outcomes)
        for base in bases
    }


def _first_write(rows: list[dict[str, Any]], session: str) -> str:
    """The first write divergence of ``session`` (repeat 0), in a few words."""
    first = [
        r for r in rows if r["session_id"] == session and not r["repeat"] and (r.get("layer") or "write") == "write"
    ]
    if not first:
        return f"{session}: no write divergence"
    r = min(first, key=lambda r: (bool(r["after_first"]), r["candidate_seq"] or r["base_seq"] or 0))
    changed = "; ".join(
        f"{f['path']}: {_short(f.get('old'))} -> {_short(f.get('new'))}" for f in json.loads(r["fields"] or "[]")[:2]
    )
    return f"{session}: {r['reason']} {_action(r)}" + (f" ({changed})" if changed else "")


def _outcome_findings(premises: _Premises, results: dict[str, DiffResult], rows: list[dict[str, Any]]) -> list[Finding]:
    """Outcome flips first: a session whose task went from pass to fail is what a team looks at first;
    the advice names each one's first write divergence (the likely cause) and how to see it."""
    out = []
    for base, result in results.items():
        outcomes = result.summary.outcomes
        first = outcomes.flipped.negative[:3] if outcomes else []
        if not outcomes or not outcomes.negative_flips or not first:
            continue
        neg = outcomes.negative_flips
        against = [r for r in rows if r["base_run"] == base]
        causes = [_first_write(against, s) for s in first]
        show = premises.command("show", premises.run, "--session", first[0])
        out.append(
            Finding(
                neg / max(1, outcomes.sessions),
                "outcomes",
                f"{neg} of {outcomes.sessions} sessions went from pass to fail against {base} "
                f"(McNemar one-sided p = {outcomes.mcnemar_p:.3g}), e.g. {', '.join(first)}",
                f"start from their first write divergence, the likely cause: {'; '.join(causes)}; "
                f"{show} prints the first one's timeline",
            )
        )
    return out
