"""The documentation builds with Sphinx, and any warning fails the build."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

missing = [m for m in ("sphinx", "myst_parser") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(
    bool(missing),
    reason=f"{', '.join(missing)} not installed (pip install -e '.[docs]')",
)
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "html" / "api.html").read_text()
    assert "open_stream" in html  # autodoc found the package
    assert (tmp_path / "html" / "close-path.html").exists()
