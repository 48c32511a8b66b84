"""The manual's examples run as written: README.md and every page of docs/. Every python block runs, every
console example (``$ sdbctl ...`` and the lines after it) prints exactly what it shows, and every
relative link points at a file and a heading that exist."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CLI

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEXTS = {page.relative_to(REPO).as_posix(): page.read_text() for page in PAGES}


def _blocks(lang: str) -> list[tuple[str, int, str]]:
    """(page, index on the page, code) of every ```lang block of the manual."""
    return [
        (page, i, code)
        for page, text in TEXTS.items()
        for i, code in enumerate(re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M))
    ]


PYTHON_BLOCKS = _blocks("python")
CONSOLE_PAGES = sorted({page for page, _, _ in _blocks("console")})
# a command may end in "# exits N" (a shell comment, so it still pastes): the exit code it shows
_EXITS = re.compile(r"\s+#\s*exits (\d+)\s*$")


def _run_block(code: str, cwd: Path) -> str:
    (cwd / "example.py").write_text(code)
    out = subprocess.run([sys.executable, "example.py"], cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _the_block(needle: str) -> str:
    (code,) = [code for _, _, code in PYTHON_BLOCKS if needle in code]
    return code


def test_the_manual_is_readme_and_docs_and_keeps_its_examples() -> None:
    assert "docs/recording.md" in TEXTS and "docs/architecture.md" in TEXTS
    assert len(PYTHON_BLOCKS) >= 2
    assert "README.md" in CONSOLE_PAGES  # the walkthrough is tested
    assert len(CONSOLE_PAGES) >= 3


def test_recorder_example_writes_the_run_it_describes(tmp_path: Path) -> None:
    run_id = _run_block(_the_block('rec.session("contract-42"'), tmp_path).strip()
    manifest = json.loads((tmp_path / ".sdb" / "runs" / run_id / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["events"] == 6 and manifest["prompts"] == ["offer@v3"]


def test_boundary_example_prints_what_it_says(tmp_path: Path) -> None:
    block = _the_block("Boundary(")
    promised = re.search(r"# prints: (.*)", block)
    assert promised is not None
    assert _run_block(block, tmp_path).strip() == promised.group(1).strip()


@pytest.mark.parametrize(("page", "index", "code"), PYTHON_BLOCKS, ids=[f"{p}#{i}" for p, i, _ in PYTHON_BLOCKS])
def test_every_python_example_runs(page: str, index: int, code: str, tmp_path: Path) -> None:
    _run_block(code, tmp_path)


@pytest.mark.parametrize("page", CONSOLE_PAGES)
def test_console_examples_print_what_they_show(page: str, sdbctl: CLI, tmp_path: Path) -> None:
    """A page's console examples run in order in one fresh store (a later one may use the runs an earlier
    one made), with the checkout's fixtures/ reachable as in a checkout."""
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")
    examples = 0
    for block in re.findall(r"^```console\n(.*?)^```", TEXTS[page], flags=re.S | re.M):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            lines = chunk.splitlines()
            command = lines[0]
            while command.endswith("\\"):
                command = command[:-1] + lines.pop(1).strip()
            exits = _EXITS.search(command)
            command = _EXITS.sub("", command)
            expected = "\n".join(line for line in lines[1:] if line.strip())
            args = shlex.split(command)
            assert args[0] == "sdbctl", command
            out = sdbctl(*args[1:])
            assert out.returncode == (int(exits.group(1)) if exits else 0), (command, out.stderr)
            assert out.stdout.strip() == expected.strip(), command
            examples += 1
    assert examples >= 1


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (a ``#`` line in a block is no heading, a ``](`` no link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_nothing_cites_a_file_outside_the_checkout() -> None:
    """A clone holds the repository only: the design is docs/design.md, not a file of ``../shared/``."""
    files = [
        *PAGES,
        *(p for d in ("cli", "sdb", "patterns", "recorders", "fixtures", "sdbctl") for p in (REPO / d).rglob("*.py")),
    ]
    cited = [
        f"{f.relative_to(REPO)}: {m}"
        for f in files
        for m in re.findall(r"\.\./shared/\S*|shared/[A-Z]\S*", f.read_text())
    ]
    assert cited == []


def test_every_relative_link_reaches_a_file_and_heading() -> None:
    broken = []
    for page, text in TEXTS.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(text)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (REPO / page).parent / path if path else REPO / page
            headings = _anchors(_prose(file.read_text())) if file.suffix == ".md" and file.exists() else set()
            if not file.exists() or (anchor and anchor not in headings):
                broken.append(f"{page}: {target}")
    assert not broken, broken
