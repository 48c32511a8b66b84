"""The README's recorder example runs as written and records what it says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_recorder_example_runs(tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)[:1]
    (tmp_path / "example.py").write_text(example)
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, check=True)
    run_id = out.stdout.strip()
    manifest = json.loads((tmp_path / ".sdb" / "runs" / run_id / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["events"] == 6 and manifest["prompts"] == ["offer@v3"]
