"""The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched) with the
summary, divergence by step and by action, the drift-versus-noise figure, and a side-by-side
timeline of every diverged session with its field diffs."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import orjson

from sdbctl.sdb.diff import (
    DiffResult,
    Divergence,
    DriftResult,
    OutcomeSummary,
    left_out_text,
    named,
    power_text,
)
from sdbctl.sdb.gate import Verdict
from sdbctl.sdb.store import Store, connect
from sdbctl.sdb.text import visible_markup

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1d2330}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.muted{color:#667}.pass{color:#0a7d32;font-weight:600}.fail{color:#b3261e;font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{border:1px solid #e2e4ea;padding:4px 6px;text-align:left;
vertical-align:top}th{background:#f4f5f8}.kpi{display:flex;gap:14px;flex-wrap:wrap}.kpi div{background:#f4f5f8;
border-radius:8px;padding:10px 14px}.kpi b{display:block;font-size:20px}.div{background:#fdecea}.cols{display:grid;
grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}.cols>div{overflow-x:auto}
code{font:12px ui-monospace,Menlo,monospace;word-break:break-all}
"""


def _bars(counts: Counter[str], title: str, width: int = 640) -> str:
    items = counts.most_common(15)
    if not items:
        return f"<p class=muted>No divergence {html.escape(title)}.</p>"
    top = max(n for _, n in items)
    rows = []
    for i, (label, n) in enumerate(items):
        w = max(2, int((width - 290) * n / top))
        y = 22 * i
        rows.append(
            f'<text x="0" y="{y + 14}" font-size="12">{html.escape(label[:30])}</text>'
            f'<rect x="220" y="{y + 3}" width="{w}" height="15" fill="#4a6fd1"/>'
            f'<text x="{226 + w}" y="{y + 14}" font-size="12">{n}</text>'
        )
    return (
        f'<svg width="{width}" height="{22 * len(items) + 4}" role="img" aria-label="{html.escape(title)}">'
        + "".join(rows)
        + "</svg>"
    )


def _drift(drift: DriftResult | None) -> str:
    if not drift:
        return (
            "<p class=muted>No noise floor, so no drift test: replay the base model against itself (--noise RUN) "
            "or the candidate with --repeat to see drift versus variance.</p>"
        )
    lo, hi = drift.ci95
    span = max(abs(lo), abs(hi), abs(drift.difference), 0.05) * 1.2

    def x(v: float) -> float:
        return float(300 + 280 * v / span)

    verdict = "drift above noise" if drift.drift_above_noise else "within the noise"
    cls = "fail" if drift.drift_above_noise else "pass"
    svg = (
        f'<svg width="600" height="70" role="img" aria-label="difference and interval">'
        f'<line x1="{x(0)}" y1="5" x2="{x(0)}" y2="55" stroke="#999" stroke-dasharray="3"/>'
        f'<line x1="{x(lo)}" y1="30" x2="{x(hi)}" y2="30" stroke="#1d2330" stroke-width="2"/>'
        f'<line x1="{x(lo)}" y1="22" x2="{x(lo)}" y2="38" stroke="#1d2330"/>'
        f'<line x1="{x(hi)}" y1="22" x2="{x(hi)}" y2="38" stroke="#1d2330"/>'
        f'<circle cx="{x(drift.difference)}" cy="30" r="5" fill="#b3261e"/>'
        f'<text x="{x(0) - 4}" y="66" font-size="11">0</text></svg>'
    )
    return (
        f"<p>Noise floor <b>{drift.noise_floor:.1%}</b> ({html.escape(drift.source)}), candidate "
        f"<b>{drift.candidate:.1%}</b>, difference <b>{drift.difference:+.1%}</b>, 95% CI "
        f"[{lo:+.1%}, {hi:+.1%}] over {drift.sessions} sessions ({drift.resamples:,} resamples): "
        f"<span class={cls}>{verdict}</span></p>{svg}"
        f"<p>What it could have seen: "
        f"{html.escape(power_text(drift.min_detectable, drift.target, drift.sessions_needed))}</p>"
    )


def _args(payload: str) -> str:
    """An action's arguments, shortened; a payload that is not a JSON object (a damaged store) as its text."""
    try:
        body = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return html.escape(str(payload)[:160])
    args = body.get("args", body) if isinstance(body, dict) else body
    return html.escape(orjson.dumps(args).decode()[:160])


def _item(d: Divergence) -> str:
    what = d.changes() or f"{d.base_action} -> {d.candidate_action}"
    if d.similarity is not None:
        what += f" (similarity {d.similarity:.2f})"
    return (
        f"<li><b>{html.escape(d.reason)}</b> [{html.escape(d.layer)}] at {html.escape(d.step or '-')}"
        f"{f' rep {d.repeat}' if d.repeat else ''}"
        f"{' <span class=muted>(after the first)</span>' if d.after_first else ''}: {html.escape(what)}</li>"
    )


def _timelines(store: Store, result: DiffResult, limit: int) -> str:
    """Per diverged session (those with a gated-layer divergence first): its first divergence, the
    rest of the gated layers' list, the other layers folded, and both sides' actions side by side."""
    layers = set(result.summary.layers)
    gated_sessions = {d.session_id for d in result.gated()}
    sessions = sorted({d.session_id for d in result.divergences}, key=lambda x: (x not in gated_sessions, x))[:limit]
    if not sessions:
        return "<p class=muted>No diverged session.</p>"
    con = connect(store, runs=(result.base_run, result.candidate_run))  # its two runs, no other
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sessions)
    rows = con.execute(
        f"SELECT run_id, session_id, seq, step, name, status, payload FROM events WHERE kind = 'action' AND "
        f"run_id IN (?, ?) AND session_id IN ({quoted}) ORDER BY session_id, seq",
        [result.base_run, result.candidate_run],
    ).fetchall()
    by: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for r in rows:
        by.setdefault((r[0], r[1]), []).append(r)
    marks: dict[tuple[str, str], set[int]] = {}
    for d in result.divergences:
        if d.base_seq is not None:
            marks.setdefault((result.base_run, d.session_id), set()).add(d.base_seq)
        if d.candidate_seq is not None:
            marks.setdefault((result.candidate_run, d.session_id), set()).add(d.candidate_seq)
    shown: dict[str, list[Divergence]] = {s: [] for s in sessions}
    for d in result.divergences:  # one pass over the diff's file, not one per session
        if d.session_id in shown:
            shown[d.session_id].append(d)
    out = []
    for s in sessions:
        divs = shown[s]
        gated = sorted((d for d in divs if d.layer in layers), key=lambda d: (d.after_first, d.repeat))
        folded = [d for d in divs if d.layer not in layers]
        items = "".join(_item(d) for d in gated)
        if folded:
            items += (
                f"<li><details><summary>{len(folded)} in other layers (speech, reads)</summary><ul>"
                + "".join(_item(d) for d in folded)
                + "</ul></details></li>"
            )
        cols = []
        for run in (result.base_run, result.candidate_run):
            trs = "".join(
                f"<tr class={'div' if r[2] in marks.get((run, s), set()) else ''}><td>{r[2]}</td>"
                f"<td>{html.escape(r[3] or '')}</td><td>{html.escape(r[4])}</td><td>{html.escape(r[5])}</td>"
                f"<td><code>{_args(r[6])}</code></td></tr>"
                for r in by.get((run, s), [])
            )
            cols.append(
                f"<div><h3>{html.escape(run)}</h3><table><tr><th>seq</th><th>step</th><th>action</th>"
                f"<th>status</th><th>args</th></tr>{trs}</table></div>"
            )
        out.append(f"<h3>{html.escape(s)}</h3><ul>{items}</ul><div class=cols>{''.join(cols)}</div>")
    more = len({d.session_id for d in result.divergences}) - len(sessions)
    return "".join(out) + (f"<p class=muted>{more} more diverged sessions (see --json).</p>" if more > 0 else "")


def _outcomes(outcomes: OutcomeSummary | None) -> str:
    if not outcomes:
        return (
            "<p class=muted>No outcomes on both sides, so no outcome test (an imported outcome, or a terminal "
            "success state).</p>"
        )
    neg = html.escape(named(outcomes.flipped.negative)) or "none"  # the first ten, then "and N more"
    pos = html.escape(named(outcomes.flipped.positive)) or "none"
    return (
        f"<p>{outcomes.sessions} sessions: base {outcomes.base_pass} pass, candidate "
        f"{outcomes.candidate_pass} pass; McNemar one-sided p = {outcomes.mcnemar_p:.4g}</p><p>What it could "
        f"have seen (at alpha {outcomes.alpha:g}): "
        f"{html.escape(power_text(outcomes.min_detectable, outcomes.target, outcomes.sessions_needed))}</p>"
        f"<table><tr><th>pass &rarr; fail ({outcomes.negative_flips})</th><td>{neg}</td></tr>"
        f"<tr><th>fail &rarr; pass ({outcomes.positive_flips})</th><td>{pos}</td></tr></table>"
    )


def render_html(store: Store, result: DiffResult, verdict: Verdict | None = None, *, sessions: int = 30) -> str:
    """The report as one HTML document."""
    s = result.summary
    layers = s.layers
    gated = result.gated()
    by_step = Counter(d.step or "(no step)" for d in gated)
    by_action = Counter(d.candidate_action or d.base_action or "?" for d in gated)
    head = ""
    if verdict is not None:
        cls = "pass" if verdict.passed else "fail"
        checks = "".join(
            f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.limit)}</td>"
            f"<td>{html.escape(c.measured)}</td><td class={'pass' if c.passed else 'fail'}>"
            f"{'PASS' if c.passed else 'FAIL'}</td></tr>"
            for c in verdict.checks
        )
        head = (
            f"<h2>Gate: <span class={cls}>{'PASS' if verdict.passed else 'FAIL'}</span></h2><table><tr>"
            f"<th>check</th><th>threshold</th><th>measured</th><th>result</th></tr>{checks}</table>"
        )
    kpis = "".join(
        f"<div>{html.escape(k)}<b>{v}</b></div>"
        for k, v in [
            ("steps diverged", f"{s.steps_diverged}/{s.steps_compared} ({s.step_divergence_rate:.1%})"),
            ("sessions diverged", f"{s.sessions_diverged}/{s.sessions_compared} ({s.session_divergence_rate:.1%})"),
            ("divergences", s.divergences),
            ("provider errors", s.errors),
            ("pass^k", "-" if s.pass_k is None else f"{s.pass_k:.1%}"),
        ]
    )
    reasons = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in s.by_reason.items())
    layer_rows = "".join(
        f"<tr><td>{html.escape(k)}{' (gated)' if k in layers else ''}</td><td>{v.steps_diverged}/"
        f"{v.steps_compared}</td><td>{v.sessions_diverged}/{v.sessions_compared}</td>"
        f"<td>{v.divergences}</td></tr>"
        for k, v in s.by_layer.items()
    )
    partial = (
        f"<p class=fail>Partial run(s) {html.escape(', '.join(s.partial))}: compared with --allow-partial.</p>"
        if s.partial
        else ""
    ) + (f"<p class=fail>{html.escape(left_out_text(s) or '')}</p>" if s.left_out else "")
    # recorded text is escaped where it is put in; a bidi override or a control character in it is
    # then shown as an escape, by the same rule as every other output
    return visible_markup(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>sdbctl: {html.escape(result.base_run)} -&gt;
{html.escape(result.candidate_run)}</title><style>{CSS}</style></head><body>
<h1>{html.escape(result.base_run)} &rarr; {html.escape(result.candidate_run)}</h1>
<p class=muted>sdbctl divergence report &middot; base run and candidate run compared action by action</p>
{partial}{head}<h2>Summary</h2><p class=muted>compared by {html.escape(s.comparison)};
the figures count the layers {html.escape(", ".join(layers))}</p><div class=kpi>{kpis}</div>
<h2>Outcomes</h2>{_outcomes(s.outcomes)}
<h2>By layer</h2><table><tr><th>layer</th><th>units diverged</th><th>sessions diverged</th><th>divergences</th></tr>
{layer_rows}</table>
<table><tr><th>reason ({html.escape(", ".join(layers))})</th><th>divergences</th></tr>{reasons}</table>
<h2>Drift versus noise</h2>{_drift(s.drift)}
<h2>Divergences by step</h2>{_bars(by_step, "by step")}
<h2>Divergences by action</h2>{_bars(by_action, "by action")}
<h2>Diverged sessions</h2>{_timelines(store, result, sessions)}
</body></html>
""")
