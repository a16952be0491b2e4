"""The optional compiled accelerator: built when it can be, never required, switchable.

``setup.py`` builds ``muxstream._speedups`` when a C compiler is present and
goes on without it when not; ``MUXSTREAM_NO_ACCEL=1`` selects the pure-Python
code; ``muxstream.protocol.ACCELERATED``/``ACCELERATOR`` say which runs. CI sets
``MUXSTREAM_REQUIRE_ACCEL=1`` so that a build that silently failed fails here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def build_ext(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


def test_setup_builds_without_a_compiler(tmp_path: Path) -> None:
    result = build_ext(tmp_path, CC="false", LDSHARED="false")
    assert result.returncode == 0, result.stderr
    assert "muxstream._speedups" in result.stdout + result.stderr  # warned about it
    assert not list(tmp_path.rglob("_speedups*.so"))


@pytest.mark.skipif(not os.path.exists("/usr/bin/cc"), reason="no C compiler on this machine")
def test_setup_builds_the_extension_with_a_compiler(tmp_path: Path) -> None:
    result = build_ext(tmp_path)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "lib" / "muxstream").glob("_speedups*.so"))
