"""``sdbctl view`` at real size, measured in the browser (Debian's Chromium driven by Playwright).

    python -m benchmarks.view_speed [--work DIR] [--sessions 100000] [--steps 500] [--repeat 3]

1. The first paint of a 100,000-session diff: ``--work DIR`` holding runs ``base`` and ``cand`` (the
   load test's store, e.g. ``/tmp/e22load3``) is reused; without them, ``benchmarks.load_test
   --work DIR --sessions N`` records and replays them first. ``sdbctl view base cand`` starts (it
   computes the diff: not measured), and from the moment it prints its URL (the server is up) to the
   moment the page has painted the first rows of the list (``window.__sdbTimings.listPaint``).
   Target <= 1 s.
2. One 500-step session: a tau-bench-shaped conversation of ``--steps`` calls (that of
   ``benchmarks.long_conversations``) imported twice, the second with a few arguments changed and one
   call left out; the page opens the session and measures its render (``performance.now()`` around
   building the two aligned columns and their layout: ``window.__sdbTimings.sessionRender``).
   Target <= 300 ms.
Each figure is the median of ``--repeat`` fresh pages (a new browser context each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.long_conversations import _conversation
from benchmarks.machine import describe

SDBCTL = str(Path(sys.executable).with_name("sdbctl"))


@contextmanager
def served(work: Path, base: str, cand: str) -> Iterator[tuple[str, float]]:
    """``sdbctl view BASE CAND`` as a process: its URL and the moment it printed it; stopped by Ctrl-C."""
    cmd = [SDBCTL, "view", base, cand, "--no-browser", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    up = time.perf_counter()
    try:
        if not url.startswith("http://"):
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise SystemExit(f"sdbctl view did not start: {err}")
        yield url, up
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _timings(page: Any, key: str) -> float:
    # a function, not an expression: the page's CSP forbids eval
    page.wait_for_function("k => window.__sdbTimings && window.__sdbTimings[k] !== null", arg=key, timeout=120_000)
    return float(page.evaluate("k => window.__sdbTimings[k]", key))


def first_paint(browser: Any, work: Path, repeat: int) -> tuple[list[float], list[float], int]:
    """Seconds to the first rows painted: the first page from the server up, each next (a fresh browser
    context) from its navigation; the page's own figures (ms from navigation start); the list's length."""
    walls, inpage, total = [], [], 0
    with served(work, "base", "cand") as (url, up):
        for k in range(repeat):
            start = up if k == 0 else time.perf_counter()
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(url)
            inpage.append(_timings(page, "listPaint"))
            walls.append(time.perf_counter() - start)
            total = int(page.inner_text("#list-count").split()[0].replace(",", ""))
            in_dom = int(page.eval_on_selector_all(".srow", "rows => rows.length"))
            if in_dom > 100:  # the list is virtual: only the rows on screen (and a few more) exist
                raise SystemExit(f"{in_dom} rows in the DOM for {total} sessions: the list is not virtual")
            context.close()
    return walls, inpage, total


def _candidate(conversation: dict[str, Any]) -> dict[str, Any]:
    """The same conversation with every 50th call's arguments changed and one call (the middle one, and
    its result) left out."""
    other: dict[str, Any] = json.loads(json.dumps(conversation))
    messages = other["messages"]
    calls = [m for m in messages if m.get("tool_calls")]
    drop = calls[len(calls) // 2]
    skip = {c["id"] for c in drop["tool_calls"]}
    kept = [m for m in messages if m is not drop and m.get("tool_call_id") not in skip]
    for m in kept:
        for call in m.get("tool_calls") or []:
            args = json.loads(call["function"]["arguments"])
            if args["k"] % 50 == 0:
                args["reservation_id"] = "R00000"
                call["function"]["arguments"] = json.dumps(args)
    other["messages"] = kept
    return other


def session_render(browser: Any, root: Path, steps: int, repeat: int) -> tuple[list[float], int]:
    """The render time (ms) of one session of ``steps`` calls, and its aligned rows."""
    conversation = _conversation("u1", steps, random.Random(7))
    (root / "base.json").write_text(json.dumps(conversation))
    (root / "cand.json").write_text(json.dumps(_candidate(conversation)))
    for run in ("base", "cand"):
        cmd = [SDBCTL, "import", "chat", str(root / f"{run}.json"), "--run-id", run]
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    times, rows = [], 0
    with served(root, "base", "cand") as (url, _):
        for _ in range(repeat):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{url}#session=u1&rep=0")
            times.append(_timings(page, "sessionRender"))
            rows = int(page.evaluate("() => window.__sdbTimings.sessionRows"))
            context.close()
    return times, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", help="a folder holding runs base and cand (made there if absent)")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions, when the runs are made")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("needs a Chromium: apt-get install chromium")
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if not all((work / ".sdb" / "runs" / run / "run.json").exists() for run in ("base", "cand")):
            load = [sys.executable, "-m", "benchmarks.load_test", "--work", str(work), "--sessions", str(args.sessions)]
            subprocess.run(load, check=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            load_before = os.getloadavg()[0]
            walls, inpage, total = first_paint(browser, work, args.repeat)
            (Path(tmp) / "long").mkdir()
            times, rows = session_render(browser, Path(tmp) / "long", args.steps, args.repeat)
            load_after = os.getloadavg()[0]
            browser.close()
    wall, paint, render = statistics.median(walls), statistics.median(inpage), statistics.median(times)
    met = "met" if walls[0] <= 1 else "NOT met"
    print(f"\nfirst list paint, {total:,} sessions: {walls[0]:.2f} s after the server was up (target <= 1 s: {met})")
    print(f"  fresh pages: {', '.join(f'{w:.2f}' for w in walls)} s (median {wall:.2f} s); in the page {paint:.0f} ms")
    met = "met" if render <= 300 else "NOT met"
    print(f"one session of {args.steps} steps ({rows} aligned rows): {render:.0f} ms (target <= 300 ms: {met})")
    print(f"  renders: {', '.join(f'{t:.0f}' for t in times)} ms")
    print(f"load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
