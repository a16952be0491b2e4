"""The remote examples run as documented."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "example-token-0123456789"


@asynccontextmanager
async def running(*argv: str) -> AsyncIterator[int]:
    """Run an example server; yield the port it printed; stop it afterwards."""
    process = await trio.lowlevel.open_process([sys.executable, *argv], stdout=-1, stderr=-1)
    try:
        assert process.stdout is not None and process.stderr is not None
        banner = b""
        with trio.fail_after(30):
            while not (match := re.search(rb"(?:on|listening on) [\d.]+:(\d+)", banner)):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    chunk = await process.stderr.receive_some()
                assert chunk, "example server exited"
                banner += chunk
        yield int(match.group(1))
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        process.kill()


async def client(port: int, *argv: str, stdin: bytes = b"") -> trio.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [
                sys.executable,
                str(EXAMPLES / "exec_client.py"),
                "--url",
                f"http://127.0.0.1:{port}",
                "--token",
                TOKEN,
                *argv,
            ],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_exec_server_and_client_local_backend() -> None:
    async with running(str(EXAMPLES / "exec_server.py"), "--port", "0", "--token", TOKEN) as port:
        upper = await client(port, "-i", "--", "tr", "a-z", "A-Z", stdin=b"hello\n")
        assert (upper.returncode, upper.stdout) == (0, b"HELLO\n")
        failed = await client(port, "--transport", "spdy", "--", "sh", "-c", "exit 4")
        assert failed.returncode == 4


async def test_exec_server_inprocess_backend() -> None:
    async with running(
        str(EXAMPLES / "exec_server.py"), "--port", "0", "--token", TOKEN, "--backend", "inprocess"
    ) as port:
        counted = await client(port, "-i", "--", "wc", stdin=b"12345")
        assert counted.stdout == b"5\n"
        unknown = await client(port, "--", "rm", "-rf", "/")
        assert unknown.returncode == 127


async def test_exec_client_reports_a_bad_token_in_one_line() -> None:
    async with running(str(EXAMPLES / "exec_server.py"), "--port", "0", "--token", TOKEN) as port:
        with trio.fail_after(60):
            result = await trio.run_process(
                [
                    sys.executable,
                    str(EXAMPLES / "exec_client.py"),
                    "--url",
                    f"http://127.0.0.1:{port}",
                    "--token",
                    "nope",
                    "--",
                    "true",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [b"exec_client: 401: Unauthorized"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_server_example_with_tls_and_token(tmp_path: Path) -> None:
    async with running(
        str(EXAMPLES / "kubectl_server.py"),
        "--port",
        "0",
        "--token",
        TOKEN,
        "--tls-dir",
        str(tmp_path),
    ):
        with trio.fail_after(60):
            result = await trio.run_process(
                [
                    "kubectl",
                    f"--kubeconfig={tmp_path / 'kubeconfig.yaml'}",
                    f"--cache-dir={tmp_path / 'cache'}",
                    "exec",
                    "-i",
                    "demo",
                    "--",
                    "cat",
                ],
                stdin=b"through kubectl\n",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through kubectl\n"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_sample_kubeconfig_reaches_an_insecure_local_server(tmp_path: Path) -> None:
    kubeconfig = (EXAMPLES / "kubeconfig.yaml").read_text()
    async with running(
        str(EXAMPLES / "kubectl_server.py"), "--port", "0", "--insecure-no-auth"
    ) as port:
        config = tmp_path / "kubeconfig.yaml"
        config.write_text(kubeconfig.replace("127.0.0.1:6443", f"127.0.0.1:{port}"))
        with trio.fail_after(60):
            result = await trio.run_process(
                [
                    "kubectl",
                    f"--kubeconfig={config}",
                    f"--cache-dir={tmp_path / 'cache'}",
                    "exec",
                    "demo",
                    "--",
                    "echo",
                    "plain http",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"plain http\n"
