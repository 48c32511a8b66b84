"""mypy over the project's own files, each module under the name it is installed as.

pyproject.toml installs the folders at the top of the checkout as ``sdbctl.<folder>`` (``[tool.setuptools]
package-dir``), which mypy cannot read: it names a module after its path, so ``cli/main.py`` would be
``cli.main`` and no ``sdbctl.cli`` would exist. This hands mypy every file of those folders with its
installed name, beside what ``[tool.mypy]`` lists (the tests and the benchmarks), with the settings of
``[tool.mypy]``, and prints and exits as ``python -m mypy`` does. Extra arguments go to mypy::

    python .ci/typecheck.py [MYPY OPTIONS]

mypy looks a module up by its path to decide whether ``from a.b import c`` imports the module
``a.b.c``; for these names that lookup finds nothing, so :class:`_Submodules` adds those imports to
mypy's dependency graph (else a module could be checked before a module it imports, or kept in the
cache after a module it imports changed). Its cache is kept apart from plain mypy's, in which the same
files would be other modules (or none).
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from mypy import build, defaults, util
from mypy.errors import CompileError
from mypy.fscache import FileSystemCache
from mypy.main import process_options, show_messages
from mypy.modulefinder import BuildSource
from mypy.nodes import ImportFrom, MypyFile
from mypy.options import Options
from mypy.plugin import Plugin

ROOT = Path(__file__).resolve().parent.parent
_PRI_MED = 10  # mypy.build's priority of an import at module level


def installed_sources() -> list[BuildSource]:
    """Every module of the folders that ``package-dir`` maps, named as installed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = []
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(BuildSource(str(path), ".".join((package, *parts))))
    return found


class _Submodules(Plugin):
    """``from a.b import c``, where ``a.b.c`` is one of the modules checked: a dependency on ``a.b.c``."""

    def __init__(self, options: Options, modules: set[str]) -> None:
        super().__init__(options)
        self.modules = modules

    def get_additional_deps(self, file: MypyFile) -> list[tuple[int, str, int]]:
        deps = []
        for imp in file.imports:
            if isinstance(imp, ImportFrom):
                base, _ = util.correct_relative_import(file.fullname, imp.relative, imp.id, file.is_package_init_file())
                deps += [(_PRI_MED, f"{base}.{n}", imp.line) for n, _ in imp.names if f"{base}.{n}" in self.modules]
        return deps


def main(args: list[str]) -> int:
    os.chdir(ROOT)  # [tool.mypy]'s packages are found from here
    fscache = FileSystemCache()
    listed, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *args], fscache=fscache)
    sources = [*installed_sources(), *listed]
    if options.cache_dir == defaults.CACHE_DIR:  # apart from plain mypy's, whose modules have other names
        options.cache_dir = os.path.join(defaults.CACHE_DIR, "installed-names")
    formatter = util.FancyFormatter(sys.stdout, sys.stderr, options.hide_error_codes)
    messages: list[str] = []

    def flush(_: str | None, new: list[str], serious: bool) -> None:
        if options.pretty:
            new = formatter.fit_in_terminal(new)
        messages.extend(new)
        show_messages(new, sys.stderr if serious else sys.stdout, formatter, options)

    blockers = False
    plugin = _Submodules(options, {s.module for s in sources})
    try:
        build.build(sources, options, flush_errors=flush, fscache=fscache, extra_plugins=[plugin])
    except CompileError:
        blockers = True
    errors, notes, files = util.count_stats(messages)
    if errors:
        print(formatter.format_error(errors, files, len(sources), blockers=blockers, use_color=options.color_output))
    elif not messages or notes == len(messages):
        print(formatter.format_success(len(sources), options.color_output))
    return (2 if blockers else 1) if messages and notes < len(messages) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
