"""Every Python example in docs/transports.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "transports.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
EXPECTED = [
    [
        "upgraded, version v4.channel.k8s.io",
        "b'OVER SPDY/3.1 UPGRADE'",
        "websocket, subprotocol SPDY/3.1+portforward.k8s.io",
        "b'OVER WEBSOCKET'",
    ],
    ["channel 1 b'ran ls -l'", 'channel 3 b\'{"status":"Success"}\''],
    ["b'hello over TLS'"],
]


def test_docs_have_the_examples_this_test_expects() -> None:
    assert len(EXAMPLES) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_docs_example_runs(index: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXAMPLES[index]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED[index]
