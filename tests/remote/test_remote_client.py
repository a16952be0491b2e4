"""The Python client against the Python server, over WebSocket and SPDY."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trustme

from muxstream.remote import (
    ExecRequest,
    FunctionBackend,
    RemoteError,
    RemoteServerConfig,
    open_remote_process,
    run_remote,
    serve_remote,
)
from muxstream.transport import TransportError

from ._remote_helpers import remote_server

TRANSPORTS = ["websocket", "spdy"]
#: Bytes pushed through stdin and stdout in the large-transfer tests. CI keeps this
#: moderate; set MUXSTREAM_TEST_REMOTE_MIB=512 for the full-size run.
LARGE = int(os.environ.get("MUXSTREAM_TEST_REMOTE_MIB", "32")) * 1024 * 1024


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exit_codes_pass_through(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        ok = await run_remote(endpoint, "demo", ["sh", "-c", "echo out; echo err >&2"])
        assert (ok.returncode, ok.stdout, ok.stderr) == (0, b"out\n", b"err\n")
        failed = await run_remote(endpoint, "demo", ["sh", "-c", "exit 3"], check=False)
        assert failed.returncode == 3
        with pytest.raises(subprocess.CalledProcessError):
            await run_remote(endpoint, "demo", ["false"])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_negotiates_the_requested_transport(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        async with open_remote_process(endpoint, "demo", ["true"]) as process:
            assert process.transport == transport
            assert process.protocol == "v5.channel.k8s.io"
            assert await process.wait() == 0


async def test_auto_prefers_websocket() -> None:
    async with remote_server("auto") as endpoint:
        async with open_remote_process(endpoint, "demo", ["true"]) as process:
            assert process.transport == "websocket"
            await process.wait()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_large_stdout_arrives_intact(transport: str, tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    with source.open("wb") as f:
        for _ in range(LARGE // (1 << 20)):
            f.write(os.urandom(1 << 20))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    async with remote_server(transport) as endpoint:
        async with open_remote_process(endpoint, "demo", ["cat", str(source)]) as process:
            digest = hashlib.sha256()
            total = 0
            assert process.stdout is not None
            async for chunk in process.stdout:
                digest.update(chunk)
                total += len(chunk)
            assert await process.wait() == 0
    assert total == LARGE
    assert digest.hexdigest() == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_large_stdin_arrives_intact_and_eof_ends_it(transport: str) -> None:
    block = os.urandom(1 << 20)
    expected = hashlib.sha256()
    async with remote_server(transport) as endpoint:
        async with open_remote_process(endpoint, "demo", ["sha256sum"], stdin=True) as process:
            assert process.stdin is not None and process.stdout is not None
            for _ in range(LARGE // len(block)):
                await process.stdin.send_all(block)
                expected.update(block)
            await process.stdin.aclose()  # EOF: sha256sum prints and exits
            output = b""
            async for chunk in process.stdout:
                output += chunk
            assert await process.wait() == 0
    assert output.split()[0].decode() == expected.hexdigest()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tty_resize_reaches_the_terminal(transport: str) -> None:
    script = "while read x; do stty size; done; exit 5"
    async with remote_server(transport) as endpoint:
        async with open_remote_process(
            endpoint, "demo", ["sh", "-c", script], stdin=True, tty=True
        ) as process:
            assert process.stderr is None  # a terminal merges stderr
            assert process.stdin is not None and process.stdout is not None
            await process.resize(123, 45)
            output = b""
            with trio.fail_after(30):
                # Resize and keystrokes travel on different streams: ask until it shows.
                while b"45 123" not in output:
                    await process.stdin.send_all(b"size?\n")
                    with trio.move_on_after(0.5):
                        while b"45 123" not in output:
                            output += await process.stdout.receive_some()
                await process.stdin.aclose()  # EOT on the terminal ends the loop
                assert await process.wait() == 5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_early_close_kills_the_remote_process(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        async with open_remote_process(
            endpoint, "demo", ["sh", "-c", "echo $$; exec sleep 300"]
        ) as process:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some()
            pid = int(line)
        # Leaving the block closed the connection: the server must kill the process.
        with trio.fail_after(30):
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await trio.sleep(0.05)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_killed_process_reports_128_plus_signal(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        result = await run_remote(endpoint, "demo", ["sh", "-c", "kill -9 $$"], check=False)
    assert result.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_missing_program_is_127_with_a_reason(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        result = await run_remote(endpoint, "demo", ["no-such-program-xyz"], check=False)
    assert result.returncode == 127
    assert b"no-such-program-xyz" in result.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_token_is_refused_before_anything_runs(transport: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    async with remote_server(transport) as endpoint:
        intruder = dataclasses.replace(endpoint, token="guess")
        with pytest.raises(RemoteError) as info:
            await run_remote(intruder, "demo", ["touch", str(marker)])
        anonymous = dataclasses.replace(endpoint, token=None)
        with pytest.raises(RemoteError):
            await run_remote(anonymous, "demo", ["touch", str(marker)])
    assert info.value.status == 401
    assert not marker.exists()


async def test_server_refuses_to_start_without_auth() -> None:
    with pytest.raises(ValueError, match="authentication"):
        async with remote_server(token=None):
            pass


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_pod_is_404(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        with pytest.raises(RemoteError) as info:
            await run_remote(endpoint, "nope", ["true"])
    assert info.value.status == 404


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_function_backend_runs_in_process(transport: str) -> None:
    async def shout(
        request: ExecRequest,
        stdin: trio.abc.ReceiveStream,
        stdout: trio.abc.SendStream,
        stderr: trio.abc.SendStream,
    ) -> int:
        async for chunk in stdin:
            await stdout.send_all(chunk.upper())
        await stderr.send_all(" ".join(request.command).encode())
        return 5

    async with FunctionBackend(shout) as backend:
        async with remote_server(transport, backend=backend) as endpoint:
            result = await run_remote(
                endpoint, "demo", ["shout", "now"], stdin=b"quiet please", check=False
            )
    assert (result.returncode, result.stdout, result.stderr) == (5, b"QUIET PLEASE", b"shout now")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_early_close_kills_the_commands_children_too(transport: str) -> None:
    async with remote_server(transport) as endpoint:
        async with open_remote_process(
            endpoint, "demo", ["sh", "-c", "sleep 300 & echo $!; wait"]
        ) as process:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some()
            child = int(line)
        with trio.fail_after(30):
            while True:
                try:
                    os.kill(child, 0)
                except ProcessLookupError:
                    break
                await trio.sleep(0.05)


async def test_no_auth_mode_refuses_to_listen_beyond_loopback() -> None:
    config = RemoteServerConfig(insecure_no_auth=True)
    with pytest.raises(ValueError, match="loopback"):
        await serve_remote(config, 0, host="0.0.0.0")


async def test_client_certs_mode_needs_a_context_that_requires_them() -> None:
    with pytest.raises(ValueError, match="CERT_REQUIRED"):
        await serve_remote(RemoteServerConfig(client_certs=True), 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_certificate_authenticates_over_tls(transport: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_context)
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("alice@example").configure_cert(with_cert)
    without_cert = ssl.create_default_context()
    ca.configure_trust(without_cert)
    marker = tmp_path / "ran"
    async with remote_server(
        transport, ssl_context=server_context, token=None, client_certs=True
    ) as endpoint:
        ok = await run_remote(
            dataclasses.replace(endpoint, token=None, ssl_context=with_cert), "demo", ["echo", "hi"]
        )
        assert ok.stdout == b"hi\n"
        anonymous = dataclasses.replace(endpoint, token=None, ssl_context=without_cert)
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError, OSError, TransportError)):
            await run_remote(anonymous, "demo", ["touch", str(marker)])
    assert not marker.exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_run_remote_reports_a_dead_connection_as_one_error(transport: str) -> None:
    """The connection dies while stdout and stderr are both being read: run_remote
    raises the one BrokenResourceError, not an ExceptionGroup of its tasks'."""
    from ._remote_helpers import cutting_proxy

    async with remote_server(transport) as endpoint:
        port = int(endpoint.url.rsplit(":", 1)[1])
        async with cutting_proxy(port, 1024 * 1024, downstream=True) as (proxy_port, cut):
            via_proxy = dataclasses.replace(endpoint, url=f"http://127.0.0.1:{proxy_port}")
            with trio.fail_after(60):
                with pytest.raises(trio.BrokenResourceError) as info:
                    await run_remote(via_proxy, "demo", [
                        "sh", "-c", "head -c 16777216 /dev/zero; head -c 65536 /dev/zero >&2"])
            assert not isinstance(info.value, BaseExceptionGroup)
            assert cut.is_set()
