"""The fuzz targets in CI: corpus replay always, atheris for a bounded time if installed.

* Every file under tests/fuzz/corpus/<target>/ (seeds, and crashes turned into
  regression inputs) must go through its target without an undocumented error.
* With atheris installed, each target is fuzzed in a subprocess for
  ``MUXSTREAM_FUZZ_SECONDS`` seconds (default 6), starting from the corpus; a crash
  fails the test and names the input atheris saved.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
SECONDS = int(os.environ.get("MUXSTREAM_FUZZ_SECONDS", "6"))


def _load_targets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("muxstream_fuzz_targets",
                                                  HERE / "fuzz_targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


targets = _load_targets()
CASES = sorted((name, path) for name in targets.TARGETS
               for path in (CORPUS / name).glob("*") if path.is_file())


def test_every_target_has_a_seed_corpus() -> None:
    assert {name for name, _ in CASES} == set(targets.TARGETS)


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_is_handled(target: str, path: Path) -> None:
    targets.TARGETS[target](path.read_bytes())


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install atheris)")
@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_atheris_finds_no_crash_in_bounded_time(target: str, tmp_path: Path) -> None:
    new_inputs = tmp_path / "new"
    new_inputs.mkdir()
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_targets.py"), target,
         f"-max_total_time={SECONDS}", "-timeout=30", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", str(new_inputs), str(CORPUS / target)],
        capture_output=True, text=True, timeout=SECONDS + 120, check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-",
                                                                               "oom-")))
    assert proc.returncode == 0 and not crashes, (
        f"atheris found {crashes} (copy into tests/fuzz/corpus/{target}/ as a regression "
        f"input):\n{proc.stderr[-4000:]}"
    )
    assert "Done" in proc.stderr or "done" in proc.stderr.lower(), proc.stderr[-2000:]
