"""The screenshots of ``sdbctl view`` in the docs, made again from the renewal workload: run it to
regenerate ``docs/img/view-list.png`` and ``docs/img/view-detail.png``.

    python docs/screenshots.py [--out docs/img]

It records the walkthrough's runs in a temporary folder (40 customers; a candidate replayed under
``sim:renewal@v3``; a noise floor replayed under ``sim:renewal@v1?noise=0.05``), starts
``sdbctl view base v3 --noise noise --no-browser``, and photographs the page in Debian's Chromium
(driven by Playwright): the list with the header's figures, then one session's aligned detail with its
first divergence and the candidate's model call opened.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SDBCTL = str(Path(sys.executable).with_name("sdbctl"))
HERE = Path(__file__).resolve().parent


def _sdbctl(cwd: Path, *args: str) -> None:
    out = subprocess.run([SDBCTL, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode not in (0, 1):
        raise SystemExit(f"sdbctl {' '.join(args)} failed: {out.stderr[-1000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE / "img"), help="where the PNG files go")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("needs a Chromium: apt-get install chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _sdbctl(work, "record", "contract-renewal", "-n", "40", "--run-id", "base")
        _sdbctl(work, "replay", "base", "--model", "sim:renewal@v1?noise=0.05", "--run-id", "noise")
        _sdbctl(work, "replay", "base", "--model", "sim:renewal@v3", "--run-id", "v3")
        cmd = [SDBCTL, "view", "base", "v3", "--noise", "noise", "--no-browser", "--port", "0"]
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            url = proc.stdout.readline().strip() if proc.stdout else ""
            if not url.startswith("http://"):
                raise SystemExit("sdbctl view did not start")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 860}, device_scale_factor=1)
                page.goto(url)
                page.wait_for_selector(".arow.current")
                page.screenshot(path=str(out / "view-list.png"))
                page.locator(".arow.current .cell.candidate .callbtn").click()  # its model call, opened
                page.wait_for_selector(".arow.current .call .msg")
                page.locator(".arow.current").scroll_into_view_if_needed()
                page.locator("#detail").screenshot(path=str(out / "view-detail.png"))
                browser.close()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    for name in ("view-list.png", "view-detail.png"):
        print(out / name)


if __name__ == "__main__":
    main()
