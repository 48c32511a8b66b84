"""A framework recorder imported without its framework says, in one line, which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

# the framework's package hidden (None in sys.modules: an import of it fails), then the recorder imported
_PROBE = """
import sys
for name in sys.argv[2:]:
    sys.modules[name] = None
from sdbctl.sdb.errors import SdbError
try:
    __import__(sys.argv[1])
except SdbError as exc:
    print(exc)
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("module", "hidden", "extra"),
    [
        ("sdbctl.recorders.openai_agents", ["agents", "httpx2"], "sdbctl[openai-agents]"),
        ("sdbctl.recorders.langchain", ["langchain_core"], "sdbctl[langchain]"),
    ],
)
def test_a_recorder_without_its_framework_names_the_extra(module: str, hidden: list[str], extra: str) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, module, *hidden], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and extra in lines[0], out.stdout


def test_the_cli_imports_no_framework() -> None:
    """`sdbctl --help` stays as fast as before: no framework is imported until a recorder is used."""
    probe = (
        "import sys; import sdbctl.cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('agents', 'langchain_core', 'langgraph', 'pydantic_ai', 'google')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
