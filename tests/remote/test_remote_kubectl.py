"""The real kubectl (v1.32) against the muxstream endpoint, over WebSocket and SPDY."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import signal
import ssl
import struct
import termios
from pathlib import Path

import pytest
import trio

from muxstream.remote import KubeApi, RemoteEndpoint, run_remote
from muxstream.transport import TransportError

from ._kube_helpers import KUBECTL, kube_endpoint

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

TRANSPORTS = ["websocket", "spdy"]
#: Size of the file `kubectl cp` copies each way (MUXSTREAM_TEST_CP_MIB to raise it).
CP_MIB = int(os.environ.get("MUXSTREAM_TEST_CP_MIB", "8"))


def _used(caplog: pytest.LogCaptureFixture, transport: str) -> bool:
    wanted = "WebSocket" if transport == "websocket" else "SPDY"
    return any(wanted in r.getMessage() for r in caplog.records if r.name == "muxstream.remote")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_exec_with_stdin(
    tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="muxstream.remote")
    async with kube_endpoint(tmp_path) as endpoint:
        result = await endpoint.kubectl(
            "exec",
            "-i",
            "demo",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done >&2",
            transport=transport,
            stdin=b"hello kubectl\n",
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HELLO KUBECTL\n"
    assert result.stderr == b"done\n"
    assert _used(caplog, transport)  # no silent fallback


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_exec_passes_exit_code(tmp_path: Path, transport: str) -> None:
    async with kube_endpoint(tmp_path) as endpoint:
        result = await endpoint.kubectl(
            "exec", "demo", "--", "sh", "-c", "echo partial; exit 42", transport=transport
        )
    assert result.returncode == 42
    assert result.stdout == b"partial\n"
    assert b"command terminated with exit code 42" in result.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_cp_both_ways_keeps_every_byte(tmp_path: Path, transport: str) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(CP_MIB * 1024 * 1024))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    async with kube_endpoint(tmp_path) as endpoint:
        up = await endpoint.kubectl(
            "cp", str(source), f"demo:{tmp_path}/remote.bin", transport=transport
        )
        assert up.returncode == 0, up.stderr
        assert hashlib.sha256((tmp_path / "remote.bin").read_bytes()).hexdigest() == digest
        down = await endpoint.kubectl(
            "cp", f"demo:{tmp_path}/remote.bin", str(tmp_path / "back.bin"), transport=transport
        )
        assert down.returncode == 0, down.stderr
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_attach(tmp_path: Path, transport: str) -> None:
    async with kube_endpoint(tmp_path) as endpoint:
        result = await endpoint.kubectl(
            "attach", "-i", "demo", transport=transport, stdin=b"hello\nquit\n"
        )
    assert result.returncode == 0, result.stderr
    assert b"got hello" in result.stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_refused_without_the_token(tmp_path: Path, transport: str) -> None:
    marker = tmp_path / "ran"
    async with kube_endpoint(tmp_path) as endpoint:
        result = await endpoint.kubectl(
            "exec", "demo", "--", "touch", str(marker), transport=transport, token="wrong"
        )
    assert result.returncode != 0
    assert b"Unauthorized" in result.stderr or b"credentials" in result.stderr
    assert not marker.exists()


async def test_kubectl_refused_command_not_in_allow_list(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    async with kube_endpoint(tmp_path, allowed_commands={"echo"}) as endpoint:
        ok = await endpoint.kubectl("exec", "demo", "--", "echo", "fine")
        refused = await endpoint.kubectl("exec", "demo", "--", "touch", str(marker))
    assert ok.returncode == 0 and ok.stdout == b"fine\n"
    assert refused.returncode != 0
    assert b"not allowed" in refused.stderr
    assert not marker.exists()


async def test_kubectl_cp_works_under_an_allow_list_with_allow_copy(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(300_000))
    (tmp_path / "into").mkdir()
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "t.txt").write_text("tree")
    marker = tmp_path / "ran"
    async with kube_endpoint(tmp_path, allowed_commands=set(), allow_copy=True) as endpoint:
        # Into an existing directory (kubectl runs `test -d` first), with --no-preserve too.
        up = await endpoint.kubectl("cp", str(source), f"demo:{tmp_path}/into")
        again = await endpoint.kubectl(
            "cp", "--no-preserve", str(source), f"demo:{tmp_path}/into/again.bin"
        )
        tree = await endpoint.kubectl("cp", str(tmp_path / "tree"), f"demo:{tmp_path}/tree2")
        down = await endpoint.kubectl(
            "cp", f"demo:{tmp_path}/into/source.bin", str(tmp_path / "back.bin")
        )
        runner = await endpoint.kubectl(
            "exec", "demo", "--", "tar", "cf", "/dev/null", "--checkpoint=1",
            f"--checkpoint-action=exec=touch {marker}", str(source),
        )
    for result in (up, again, tree, down):
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "into" / "source.bin").read_bytes() == source.read_bytes()
    assert (tmp_path / "into" / "again.bin").read_bytes() == source.read_bytes()
    assert (tmp_path / "tree2" / "sub" / "t.txt").read_text() == "tree"
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert runner.returncode != 0 and b"allowed only with the arguments" in runner.stderr
    assert not marker.exists()


async def _echo_handler(stream: trio.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)
        await stream.send_eof()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_port_forward_to_echo_server(
    tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="muxstream.remote")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _echo_handler, 0, host="127.0.0.1")
        )
        echo_port = listeners[0].socket.getsockname()[1]
        async with kube_endpoint(tmp_path) as endpoint:
            assert KUBECTL is not None
            process = await trio.lowlevel.open_process(
                [
                    KUBECTL,
                    f"--kubeconfig={endpoint.kubeconfig}",
                    f"--cache-dir={endpoint.cache_dir}",
                    "port-forward",
                    "demo",
                    "--address=127.0.0.1",
                    f":{echo_port}",
                ],
                stdout=-1,
                stderr=-1,
                env=endpoint.env(transport),
            )
            try:
                with trio.fail_after(60):
                    assert process.stdout is not None
                    banner = b""
                    while not (match := re.search(rb"127.0.0.1:(\d+) ->", banner)):
                        chunk = await process.stdout.receive_some()
                        assert chunk, "kubectl port-forward exited"
                        banner += chunk
                    local_port = int(match.group(1))
                    for size in (1, 5 * 1024 * 1024):
                        payload = os.urandom(size)
                        conn = await trio.open_tcp_stream("127.0.0.1", local_port)
                        received = bytearray()

                        async def send(
                            conn: trio.SocketStream = conn, data: bytes = payload
                        ) -> None:
                            await conn.send_all(data)
                            await conn.send_eof()

                        async with conn, trio.open_nursery() as inner:
                            inner.start_soon(send)
                            async for chunk in conn:
                                received += chunk
                        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
            finally:
                process.kill()
                await process.wait()
        nursery.cancel_scope.cancel()
    assert _used(caplog, transport)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_exec_tty_follows_terminal_resizes(tmp_path: Path, transport: str) -> None:
    """kubectl -it on a pseudo-terminal: raw mode, the remote pty, SIGWINCH -> resize."""
    master, slave = os.openpty()
    _set_winsize(slave, 40, 100)
    script = "while read x; do stty size; done; exit 3"
    async with kube_endpoint(tmp_path) as endpoint:
        assert KUBECTL is not None
        process = await trio.lowlevel.open_process(
            [
                KUBECTL,
                f"--kubeconfig={endpoint.kubeconfig}",
                f"--cache-dir={endpoint.cache_dir}",
                "exec",
                "-it",
                "demo",
                "--",
                "sh",
                "-c",
                script,
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=endpoint.env(transport),
        )
        os.close(slave)
        terminal = trio.lowlevel.FdStream(master)
        seen = b""

        async def until(expected: bytes) -> None:
            nonlocal seen
            # Keep asking: the resize and the keystroke travel on different streams.
            while expected not in seen:
                await terminal.send_all(b"size?\r")
                with trio.move_on_after(0.5):
                    while expected not in seen:
                        seen += await terminal.receive_some()

        try:
            with trio.fail_after(60):
                await until(b"40 100")
                _set_winsize(master, 33, 77)
                process.send_signal(signal.SIGWINCH)
                await until(b"33 77")
                await terminal.send_all(b"\x04")  # ^D: end of input for the remote shell
                returncode = await process.wait()
        finally:
            process.kill()
            with contextlib.suppress(OSError):
                await terminal.aclose()
    assert returncode == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_killed_process_exits_128_plus_signal(tmp_path: Path, transport: str) -> None:
    async with kube_endpoint(tmp_path) as endpoint:
        result = await endpoint.kubectl(
            "exec", "demo", "--", "sh", "-c", "kill -9 $$", transport=transport
        )
    assert result.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_with_a_client_certificate(tmp_path: Path, transport: str) -> None:
    async with kube_endpoint(tmp_path, client_certs=True) as endpoint:
        result = await endpoint.kubectl(
            "exec", "demo", "--", "echo", "cert ok", transport=transport
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"cert ok\n"
        # No certificate: the TLS handshake fails before any HTTP, nothing runs.
        context = ssl.create_default_context(cafile=str(endpoint.ca_path))
        anonymous = RemoteEndpoint(f"https://127.0.0.1:{endpoint.port}", ssl_context=context)
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError, OSError, TransportError)):
            await run_remote(anonymous, "demo", ["touch", str(tmp_path / "ran")])
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_kubectl_attach_with_a_terminal(tmp_path: Path, transport: str) -> None:
    """kubectl attach -it to a shell running on a pty in the "container"."""
    master, slave = os.openpty()
    _set_winsize(slave, 30, 90)
    async with kube_endpoint(
        tmp_path,
        attach_commands={"main": ["sh"]},
        attach_tty=True,
        api=KubeApi({"demo": ["main"]}, tty_containers=["main"]),
    ) as endpoint:
        assert KUBECTL is not None
        process = await trio.lowlevel.open_process(
            [
                KUBECTL,
                f"--kubeconfig={endpoint.kubeconfig}",
                f"--cache-dir={endpoint.cache_dir}",
                "attach",
                "-it",
                "demo",
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=endpoint.env(transport),
        )
        os.close(slave)
        terminal = trio.lowlevel.FdStream(master)
        seen = b""
        try:
            with trio.fail_after(60):
                while b"attached-30 90" not in seen:
                    await terminal.send_all(b'echo "attached-$(stty size)"\r')
                    with trio.move_on_after(0.5):
                        while b"attached-30 90" not in seen:
                            seen += await terminal.receive_some()
                await terminal.send_all(b"exit 0\r")
                returncode = await process.wait()
        finally:
            process.kill()
            with contextlib.suppress(OSError):
                await terminal.aclose()
    assert returncode == 0
