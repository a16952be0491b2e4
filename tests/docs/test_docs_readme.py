"""The README's code example runs as written (docs stay true to the code)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_example_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README.md lost its Python example"
    script = tmp_path / "readme_example.py"
    script.write_text(blocks[0])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.startswith("b'hello' ")


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo" in readme and "bash scripts/test" in readme
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()
