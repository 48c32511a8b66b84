"""The shape of the code (docs/architecture.md): the folders installed as one package, the imports
going one way between them, and no import loop among the modules of any package.

Imports are read from the source (ast), every one of them: at module level, inside a function, under
``if TYPE_CHECKING:``. A loop that only a deferred import or a type-only import keeps from failing
at run time is still a loop: neither module can be read, or changed, without the other.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("cli", "fixtures", "patterns", "recorders", "sdb")
#: what each folder may import from the others: cli -> fixtures -> recorders, patterns -> sdb
ALLOWED = {
    "cli": {"fixtures", "patterns", "recorders", "sdb"},
    "fixtures": {"patterns", "recorders", "sdb"},
    "patterns": {"sdb"},
    "recorders": {"sdb"},
    "sdb": set(),
}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by its installed name (``sdbctl.sdb.store._lock``)."""
    found = {"sdbctl": REPO / "sdbctl" / "__init__.py"}
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(("sdbctl", *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """The modules of the package that ``name`` imports (a ``from a import b`` of the module ``a.b``
    imports ``a.b``), with the line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target in MODULES:
                yield target, node.lineno


IMPORTS = {name: sorted(set(_imported(name, path))) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _child(package: str, module: str) -> str | None:
    """The member of ``package`` (a module or a sub-package) that holds ``module``, if any."""
    if not module.startswith(package + "."):
        return None
    return ".".join(module.split(".")[: package.count(".") + 2])


def test_no_package_has_an_import_loop_among_its_modules() -> None:
    """In each package, its members (modules, and sub-packages taken whole) import each other one way.
    A package's ``__init__`` (its interface, importing its members) is not a member."""
    loops = []
    for package in sorted(n for n, p in MODULES.items() if p.name == "__init__.py"):
        graph: dict[str, set[str]] = {}
        for name, imports in IMPORTS.items():
            here = _child(package, name)
            if here is None:
                continue
            for target, _ in imports:
                there = _child(package, target)
                if there is not None and there != here:
                    graph.setdefault(here, set()).add(there)
        loops += [f"{package}: {' <-> '.join(group)}" for group in _cycles(graph)]
    assert loops == [], "import loops (move what both need into a module both import):\n" + "\n".join(loops)


def test_the_loop_finder_finds_loops() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_go_one_way_between_the_folders() -> None:
    wrong = [
        f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
        for name, imports in IMPORTS.items()
        if name != "sdbctl"
        for target, line in imports
        if target != "sdbctl" and (a := name.split(".")[1]) != (b := target.split(".")[1]) and b not in ALLOWED[a]
    ]
    assert wrong == []


def test_the_program_imports_neither_the_tests_nor_the_benchmarks() -> None:
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            wrong += [f"{name} imports {n}" for n in names if n.split(".")[0] in ("tests", "benchmarks")]
    assert wrong == []


def test_every_package_of_the_folders_is_installed_under_its_folder() -> None:
    """pyproject.toml maps each folder to ``sdbctl.<folder>`` and lists every package below it (a
    folder of data files too): a folder left out would be missing from the wheel, not from a checkout."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"sdbctl": "sdbctl", **{f"sdbctl.{f}": f for f in FOLDERS}}
    folders = {
        ".".join(("sdbctl", *d.relative_to(REPO).parts))
        for f in FOLDERS
        for d in [REPO / f, *(REPO / f).rglob("*")]
        if d.is_dir() and not d.name.startswith((".", "__")) and any(c.is_file() for c in d.iterdir())
    }
    assert set(setuptools["packages"]) == folders | {"sdbctl"}
    assert not any(p.is_symlink() for p in (REPO / "sdbctl").iterdir())  # the folders are mapped, not linked
