"""The page as one file (``gate --html``): self-contained, and in headless Chromium its script runs under
the file's own Content-Security-Policy (no violation, no console error) and renders the embedded data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import CLI, require

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_file_renders_its_embedded_data_in_headless_chromium(sdbctl: CLI, tmp_path: Path) -> None:
    require(CHROMIUM, "a headless Chromium", "sh .ci/system-packages, or apt-get install chromium")
    assert sdbctl("record", "contract-renewal", "-n", "20", "--run-id", "base").returncode == 0
    assert sdbctl("replay", "base", "--model", "sim:renewal@v1?noise=0.05", "--run-id", "noise").returncode == 0
    assert sdbctl("replay", "base", "--model", "sim:renewal@v3", "--run-id", "v3").returncode == 0
    out = sdbctl("gate", "v3", "--noise", "noise", "--noise-aware", "--html", "report.html")
    assert out.returncode in (0, 1), out.stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    data = re.search(r'<script type="application/json" id="sdb-data">(.*?)</script>', page, re.S)
    assert data, "no embedded data"
    embedded = json.loads(data.group(1))
    assert embedded["header"]["verdict"]["passed"] is (out.returncode == 0)  # the gate's verdict goes in
    first = embedded["sessions"][0]["session_id"]
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
            "--virtual-time-budget=5000",
            "--dump-dom",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rendered = re.sub(r'<script type="application/json" id="sdb-data">.*?</script>', "", run.stdout, flags=re.S)
    assert first in rendered  # the list was drawn from the embedded rows by the page's script
    assert "v3" in rendered.split('id="header"', 1)[1].split("</header>", 1)[0]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "CSP" in line]
    assert console == []
