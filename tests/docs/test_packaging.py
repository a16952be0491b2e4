"""The product stands on its own files: what the wheel ships, what setup installs
(issue 14, items 10 and 12)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_py_typed_and_nothing_of_the_repository(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    # setuptools warns on every build about a license written as a TOML table.
    assert "deprecated" not in (built.stdout + built.stderr).lower()
    (wheel,) = tmp_path.glob("muxstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "muxstream/py.typed" in names
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/", "examples/"))]


def test_the_package_does_not_reach_into_the_repository() -> None:
    for path in (ROOT / "muxstream").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) benchmarks\b", text, re.M), path
    bench_help = subprocess.run(
        [sys.executable, "-m", "muxstream", "bench", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert bench_help.returncode == 0
    assert "--suite" not in bench_help.stdout
    assert "python benchmarks/run.py" in bench_help.stdout


def test_code_and_docs_cite_only_files_of_the_repository() -> None:
    # Team notes outside the repository are not something a user can open.
    places = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for folder in ("muxstream", "examples", "benchmarks", "scripts"):
        places += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", "")
                   and p.is_file()]
    for path in places:
        text = path.read_text(errors="replace")
        for name in ("ARCHITECTURE", "PERFORMANCE.md", "STYLE.md"):
            assert name not in text, f"{path} cites {name}"


def _fake_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of scripts/ and pyproject.toml with a .venv whose python only logs."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    log = tmp_path / "calls.log"
    python = repo / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    python.chmod(0o755)
    muxstream = python.parent / "muxstream"
    muxstream.write_text(f'#!/bin/sh\necho "muxstream $*" >> {log}\n')
    muxstream.chmod(0o755)
    return repo, log


def _run(repo: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", f"scripts/{script}"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)


def test_demo_installs_only_what_it_needs_once_and_then_is_quiet(tmp_path: Path) -> None:
    repo, log = _fake_repo(tmp_path)
    first = _run(repo, "demo")
    assert first.returncode == 0, first.stderr
    installs = [line for line in log.read_text().splitlines() if "pip install" in line
                and "--upgrade pip" not in line]
    assert installs == ["-m pip install -qq -e ."], installs  # no test/bench/docs extras
    log.write_text("")
    again = _run(repo, "demo")
    assert again.returncode == 0
    assert again.stdout == again.stderr == ""  # up to date: not a word
    assert log.read_text().splitlines() == ["muxstream demo"]  # and no pip at all


def test_the_test_command_installs_the_rest_and_a_changed_pyproject_reinstalls(
    tmp_path: Path,
) -> None:
    repo, log = _fake_repo(tmp_path)
    assert _run(repo, "demo").returncode == 0
    log.write_text("")
    assert _run(repo, "setup").returncode == 0
    assert "-m pip install -qq -e .[test,bench,docs,kube]" in log.read_text().splitlines()
    log.write_text("")
    assert _run(repo, "demo").stderr == ""  # the full set covers the demo
    assert "pip" not in log.read_text()
    with (repo / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    assert _run(repo, "demo").returncode == 0
    assert "-m pip install -qq -e ." in log.read_text().splitlines()


def test_a_changed_c_source_rebuilds_the_accelerator(tmp_path: Path) -> None:
    # The install builds muxstream/_csrc (setup.py): an edit there must not be
    # taken for "up to date", or the old compiled code would go on running.
    repo, log = _fake_repo(tmp_path)
    shutil.copy(ROOT / "setup.py", repo / "setup.py")
    shutil.copytree(ROOT / "muxstream" / "_csrc", repo / "muxstream" / "_csrc")
    assert _run(repo, "setup").returncode == 0
    log.write_text("")
    assert _run(repo, "setup").stderr == ""  # up to date
    assert "pip" not in log.read_text()
    with (repo / "muxstream" / "_csrc" / "decoder.c").open("a") as f:
        f.write("\n/* changed */\n")
    assert _run(repo, "setup").returncode == 0
    assert [line for line in log.read_text().splitlines() if " install -qq -e ." in line]
