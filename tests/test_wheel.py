"""A built wheel installs on its own and runs: console script, package data, the sample run."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("cli", "sdb", "patterns", "recorders", "fixtures")
SHIPPED = {".py", ".txt", ".md", ".jsonl", ".yaml", ".toml", ".csv"}  # pyproject.toml's package-data, and code


def test_built_wheel_installs_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # as on a machine with no C compiler: a compiler called at all fails the build
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        env={**os.environ, "CC": "false", "CXX": "false"},
    )
    (wheel,) = dist.glob("sdbctl-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name  # pure Python: one wheel for every platform
    with zipfile.ZipFile(wheel) as zf:
        assert not [n for n in zf.namelist() if n.endswith((".so", ".pyd", ".c", ".h"))], zf.namelist()
        tops = {name.split("/", 1)[0] for name in zf.namelist() if "/" in name and ".dist-info" not in name}
        packages = {name.rsplit("/", 1)[0] for name in zf.namelist() if name.startswith("sdbctl/")}
        names = set(zf.namelist())
    # one installed name: no tests, no benchmarks, no generic cli/fixtures that another project could shadow
    assert tops == {"sdbctl"}, tops
    assert {f"sdbctl/{p}" for p in FOLDERS} <= packages, packages
    # each folder installed whole under sdbctl/ (pyproject.toml's package-dir), its modules and its data
    shipped = {n for n in names if n.startswith("sdbctl/")}
    checkout = {
        f"sdbctl/{path.relative_to(REPO).as_posix()}"
        for folder in FOLDERS
        for path in (REPO / folder).rglob("*")
        if path.is_file() and path.suffix in SHIPPED and "__pycache__" not in path.parts
    }
    assert checkout - shipped == set(), sorted(checkout - shipped)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # reuse the test environment's dependencies through a .pth line; the .pth files of that directory
    # (our own editable install among them) are not processed, so sdbctl itself comes from the wheel
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # every site directory of this interpreter: a venv made with --system-site-packages finds some
    # dependencies in the base interpreter's site-packages
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    deps |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    (Path(site) / "test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    # --ignore-installed: where the tests run from a non-editable install, the .pth line shows pip an
    # sdbctl already installed, which it would keep instead of the wheel
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import sdbctl.cli, sdbctl.fixtures as f; print(sdbctl.cli.__file__, f.DATA_DIR)"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where and str(REPO) not in where
    # Python run in the root of a checkout finds its sdbctl/__init__.py first, which holds no folder:
    # the installed ones are found all the same
    inside = subprocess.run(
        [str(py), "-c", "import sdbctl.recorders.sdk as m; print(m.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in inside, inside
    run = subprocess.run(
        [str(py), "-m", "sdbctl.fixtures.sample_run", "--customers", "3", "--run-id", "w"], cwd=work, check=True
    )
    assert run.returncode == 0
    out = subprocess.run(
        [str(env_dir / "bin" / "sdbctl"), "runs", "--json"], cwd=work, capture_output=True, text=True, check=True
    )
    assert '"run_id": "w"' in out.stdout and '"sessions": 3' in out.stdout
