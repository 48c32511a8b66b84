"""The README's examples run as written: every python block, and every console example's output."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import CLI

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
CONSOLE_BLOCKS = re.findall(r"```console\n(.*?)```", TEXT, flags=re.S)


def _run_block(code: str, cwd: Path) -> str:
    (cwd / "example.py").write_text(code)
    return subprocess.run([sys.executable, "example.py"], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_readme_recorder_example_runs(tmp_path: Path) -> None:
    run_id = _run_block(PYTHON_BLOCKS[0], tmp_path).strip()
    manifest = json.loads((tmp_path / ".sdb" / "runs" / run_id / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["events"] == 6 and manifest["prompts"] == ["offer@v3"]


def test_readme_boundary_example_prints_what_it_says(tmp_path: Path) -> None:
    (block,) = [b for b in PYTHON_BLOCKS if "Boundary(" in b]
    promised = re.search(r"# prints: (.*)", block)
    assert promised is not None
    assert _run_block(block, tmp_path).strip() == promised.group(1).strip()


def test_readme_console_examples_print_what_they_show(sdbctl: CLI) -> None:
    examples = 0
    for block in CONSOLE_BLOCKS:
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            lines = chunk.splitlines()
            command = lines[0]
            while command.endswith("\\"):
                command = command[:-1] + lines.pop(1).strip()
            expected = "\n".join(line for line in lines[1:] if line.strip())
            args = shlex.split(command)
            assert args[0] == "sdbctl"
            out = sdbctl(*args[1:])
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == expected.strip(), command
            examples += 1
    assert examples >= 3
