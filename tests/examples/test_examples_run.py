"""Each example runs as documented in its header (small sizes), as a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 60


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_every_example_says_what_to_try() -> None:
    for path in sorted(EXAMPLES.glob("*.py")):
        head = path.read_text().split('"""')[1]
        assert "Try it" in head, path.name


def test_echo_server_and_client() -> None:
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        match = re.search(r"listening on [\d.]+:(\d+)", server.stdout.readline())
        assert match
        client = run(str(EXAMPLES / "echo_client.py"), "--port", match.group(1),
                     "--streams", "40", "--size", "100000")
        assert client.returncode == 0, client.stderr
        assert "40/40 streams echoed intact" in client.stdout
    finally:
        server.terminate()
        server.wait(timeout=TIMEOUT)


def test_echo_client_without_a_server_fails() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = run(str(EXAMPLES / "echo_client.py"), "--port", str(port))
    assert client.returncode != 0


def test_bulk_copy_generated_data() -> None:
    result = run(str(EXAMPLES / "bulk_copy.py"), "--size", "16M")
    assert result.returncode == 0, result.stderr
    assert "receiver got 16,777,216 bytes, sha256 match" in result.stdout


def test_bulk_copy_a_file(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 12345)
    result = run(str(EXAMPLES / "bulk_copy.py"), "--file", str(data))
    assert result.returncode == 0, result.stderr
    assert f"receiver got {256 * 12345:,} bytes, sha256 match" in result.stdout


def test_port_forward() -> None:
    result = run(str(EXAMPLES / "port_forward.py"))
    assert result.returncode == 0, result.stderr
    assert "got b'THE TUNNEL'" in result.stdout


def test_websocket_echo() -> None:
    result = run(str(EXAMPLES / "websocket_echo.py"), "--streams", "12")
    assert result.returncode == 0, result.stderr
    assert "12 streams over one WebSocket: all echoed" in result.stdout


def test_custom_backend() -> None:
    result = run(str(EXAMPLES / "custom_backend.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stdout: b'3\\n1024\\n'" in result.stdout
    assert "exit code: 1" in result.stdout
