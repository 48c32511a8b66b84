"""The HTML report is one self-contained file that opens in headless Chromium without console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import CLI, require

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained_and_renders_in_headless_chromium(sdbctl: CLI, tmp_path: Path) -> None:
    require(CHROMIUM, "a headless Chromium", "sh .ci/system-packages, or apt-get install chromium")
    assert sdbctl("record", "contract-renewal", "-n", "40", "--run-id", "base").returncode == 0
    assert sdbctl("replay", "base", "--model", "sim:renewal@v1?noise=0.05", "--run-id", "noise").returncode == 0
    assert sdbctl("replay", "base", "--model", "sim:renewal@v3", "--run-id", "v3").returncode == 0
    out = sdbctl("gate", "v3", "--noise", "noise", "--noise-aware", "--html", "report.html")
    assert out.returncode in (0, 1), out.stderr
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert "<script" not in page
    sections = ("Summary", "Drift versus noise", "Divergences by step", "Divergences by action", "Diverged sessions")
    assert all(section in page for section in sections)
    assert "Outcomes" in page and "By layer" in page  # writes and flips lead
    assert "args_changed" in page and "day-030/offer" in page
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
