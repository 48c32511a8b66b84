"""Where the boundary is weak: read a run's divergences and name the actions, fields, reasons and
patterns they concentrate in, each with a recommendation in terms of the patterns."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sdbctl.sdb.diff import OutcomeSummary
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


_REASON_ADVICE = {
    "parse_failed": "the model's answers stop parsing: ask for native tool calls (or structured output) and keep "
    "the boundary's reject handing the failure back (P4 supervisor restarts the step)",
    "invalid": "answers parse but break the action's schema: send the schema as the tool definition and tighten "
    "it (enums, bounds) so the verifier rejects early",
    "gate_changed": "the model now lands on the other side of a guard: keep P4's policy gate in front of the side "
    "effect and mark the action critical so the gate fails CI on it",
    "state_changed": "episodes take another path through their states: move the step behind a P5 transition, "
    "where only legal (state, action) pairs can commit",
    "missing": "actions disappear: make the step a P5 transition or a P3 log entry so a skipped step is visible",
    "extra": "actions appear that the base never took: bound them with P4's gate (and P6 approval if critical)",
    "reordered": "the same actions come in another order: sequence them through a P3 log or P5 transitions",
    "tool_changed": "the model picks another tool for the same step: narrow the tools offered at that step",
}


def diagnose(store: Store, run: str) -> dict[str, Any]:
    """Findings for ``run`` as a candidate (from its stored diffs), most important first."""
    run = store.resolve(run)
    con = connect(store)
    rows = query_arrow(con, f"SELECT * FROM divergences WHERE candidate_run = '{run}'").to_pylist()
    if not rows:
        raise SdbError(f"run {run!r} has no stored divergences; run `sdbctl diff BASE {run}` first")
    all_rows = rows
    layer_counts = Counter(r.get("layer") or "write" for r in all_rows)
    writes = [r for r in all_rows if (r.get("layer") or "write") == "write"]
    rows = writes or all_rows  # the write layer leads; speech and reads are reported after it
    total = len(rows)
    findings: list[Finding] = []
    fields: Counter[tuple[str, str]] = Counter()
    values: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if r["reason"] != "args_changed":
            continue
        for f in json.loads(r["fields"] or "[]"):
            key = (r["candidate_action"] or r["base_action"] or "?", f["path"].split("[")[0])
            fields[key] += 1
            values.setdefault(key, []).extend([f.get("old"), f.get("new")])
    for (action, path), n in fields.most_common(3):
        share = n / total
        kind = _kind(values[(action, path)])
        advice = {
            "free-text": f"constrain {action}.{path} with an enum or a pattern in the action's signature, or move "
            "the free text out of the action (the differ can then normalise or ignore it)",
            "numeric": f"declare rounding for {action}.{path} (rounding={{'{path}': N}}) or a numeric tolerance, "
            "and bound it with P4's policy gate",
            "categorical": f"make {action}.{path} an enum (Literal[...]) and watch it as a critical field",
        }.get(kind, f"split {action}.{path} into typed fields the schema can check")
        findings.append(
            Finding(
                share,
                f"{action}.{path}",
                f"{share:.0%} of divergences are {kind} argument changes of {action}.{path} ({n} of {total})",
                advice,
            )
        )
    for reason, n in Counter(r["reason"] for r in rows).most_common():
        if reason == "args_changed" and fields:
            continue
        findings.append(
            Finding(
                n / total,
                reason,
                f"{n / total:.0%} of divergences are {reason} ({n} of {total})",
                _REASON_ADVICE.get(reason, "look at the divergences of this reason"),
            )
        )
    patterns = Counter(r["pattern"] or "(none)" for r in rows)
    top, n = patterns.most_common(1)[0]
    findings.append(
        Finding(
            n / total,
            f"pattern {top}",
            f"{n / total:.0%} of divergences are in events tagged {top}",
            f"read `sdbctl patterns show {top}` for what a divergence means there",
        )
    )
    actions = Counter(r["candidate_action"] or r["base_action"] or "?" for r in rows)
    findings.sort(key=lambda f: -f.share)
    lead = _outcome_findings(store, run, sorted({r["base_run"] for r in all_rows}))
    others = {k: v for k, v in layer_counts.items() if k != "write"}
    tail = [
        Finding(
            n / len(all_rows),
            f"layer {layer}",
            f"{n} of {len(all_rows)} divergences are in the {layer} layer (not gated by default)",
            "speech is compared by similarity: raise or lower [diff] speech_threshold if it flags rewordings"
            if layer == "speech"
            else "reads change what the model saw, not what it did; declare them pure=True or in [diff] read_only",
        )
        for layer, n in sorted(others.items())
        if writes
    ]
    return {
        "run": run,
        "divergences": len(all_rows),
        "by_layer": dict(sorted(layer_counts.items())),
        "by_action": dict(actions.most_common()),
        "findings": as_json([*lead, *findings, *tail]),
    }


def _outcome_findings(store: Store, run: str, bases: list[str]) -> list[Finding]:
    """Outcome flips first: a session whose task went from pass to fail is what a team looks at first."""
    out = []
    for base in bases:
        try:
            saved = json.loads(store.loc.read_bytes(f"{store.diff_dir(base, run)}/summary.json"))
            # only its outcomes: a summary saved by another version may differ elsewhere
            part = saved.get("outcomes") if isinstance(saved, dict) else None
            outcomes = OutcomeSummary.from_json(part) if isinstance(part, dict) else None
        except (OSError, ValueError, SdbError):
            continue
        if not outcomes or not outcomes.negative_flips:
            continue
        neg = outcomes.negative_flips
        first = outcomes.flipped.negative[:3]
        out.append(
            Finding(
                neg / max(1, outcomes.sessions),
                "outcomes",
                f"{neg} of {outcomes.sessions} sessions went from pass to fail against {base} "
                f"(McNemar one-sided p = {outcomes.mcnemar_p:.3g}), e.g. {', '.join(first)}",
                "start from the first write divergence of those sessions: it is the likely cause",
            )
        )
    return out
