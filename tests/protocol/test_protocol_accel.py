"""The optional compiled accelerator: built when it can be, never required, switchable.

``setup.py`` builds ``muxstream._speedups`` when a C compiler is present and
goes on without it when not; ``MUXSTREAM_NO_ACCEL=1`` selects the pure-Python
code; ``muxstream.protocol.ACCELERATED``/``ACCELERATOR`` say which runs. CI sets
``MUXSTREAM_REQUIRE_ACCEL=1`` so that a build that silently failed fails here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import muxstream.protocol as protocol
from muxstream.protocol import _frames

REPO = Path(__file__).resolve().parents[2]
BUILT = importlib.util.find_spec("muxstream._speedups") is not None
FORCED_OFF = os.environ.get("MUXSTREAM_NO_ACCEL", "").strip() not in ("", "0")


def probe(**env: str) -> list[str]:
    """What a fresh interpreter with ``env`` reports: ACCELERATED, decoder class, ACCELERATOR."""
    code = (
        "import muxstream.protocol as p, muxstream.protocol._frames as f;"
        "print(p.ACCELERATED); print(f.FrameDecoder.__module__); print(p.ACCELERATOR)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUXSTREAM_")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return out.splitlines()


def test_this_process_runs_what_the_environment_asks_for() -> None:
    if os.environ.get("MUXSTREAM_REQUIRE_ACCEL") == "1":
        assert BUILT, "MUXSTREAM_REQUIRE_ACCEL=1 but muxstream._speedups was not built"
    assert protocol.ACCELERATED == (BUILT and not FORCED_OFF)
    expected = "muxstream._speedups" if protocol.ACCELERATED else "muxstream.protocol._frames"
    assert _frames.FrameDecoder.__module__ == expected


def test_the_environment_variable_forces_pure_python() -> None:
    assert probe(MUXSTREAM_NO_ACCEL="1") == [
        "False", "muxstream.protocol._frames", "pure Python: MUXSTREAM_NO_ACCEL is set"]
    default = probe(MUXSTREAM_NO_ACCEL="0")
    if BUILT:
        assert default == ["True", "muxstream._speedups", "compiled C accelerator"]
    else:
        assert default == ["False", "muxstream.protocol._frames",
                           "pure Python: the compiled accelerator is not built"]


def source_tree(dest: Path) -> Path:
    """A clean copy of what a source install builds from (no built extension)."""
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "muxstream", dest / "muxstream",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return dest


def test_a_source_install_builds_the_extension_when_it_can_and_installs_without(
    tmp_path: Path,
) -> None:
    # What `pip install` (and so scripts/setup) does with a source tree: once with
    # the compiler this machine has, once with a compiler that always fails.
    builds = {}
    for name, env in (("with", {}), ("without", {"CC": "false", "LDSHARED": "false"})):
        # A tree each: the two builds run at once and setuptools writes build/ in it.
        (tree := tmp_path / f"src-{name}").mkdir()
        src = source_tree(tree)
        out = tmp_path / f"wheel-{name}"
        builds[name] = (out, subprocess.Popen(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    contents = {}
    for name, (out, process) in builds.items():
        log, _ = process.communicate(timeout=600)
        assert process.returncode == 0, log[-3000:]
        (wheel,) = out.glob("muxstream-*.whl")
        contents[name] = zipfile.ZipFile(wheel).namelist()
    assert "muxstream/_accel.py" in contents["without"]
    assert not [n for n in contents["without"] if "_speedups" in n and n.endswith(".so")]
    if shutil.which("cc") or shutil.which("gcc"):
        assert [n for n in contents["with"] if "_speedups" in n and n.endswith(".so")]


def session_statistics_probe(**env: str) -> list[str]:
    """What ``Session.statistics()`` says in a fresh interpreter with ``env``."""
    code = (
        "import trio, muxstream.testing as t\n"
        "async def main():\n"
        "    async with t.open_session_pair(keepalive_interval=None) as (c, s):\n"
        "        st = c.statistics(); print(st.accelerated); print(st.accelerator)\n"
        "trio.run(main)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUXSTREAM_")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return out.splitlines()


def test_session_statistics_say_which_path_runs() -> None:
    assert session_statistics_probe(MUXSTREAM_NO_ACCEL="1") == [
        "False", "pure Python: MUXSTREAM_NO_ACCEL is set"]
    if BUILT:
        assert session_statistics_probe() == ["True", "compiled C accelerator"]
    else:
        assert session_statistics_probe() == [
            "False", "pure Python: the compiled accelerator is not built"]
