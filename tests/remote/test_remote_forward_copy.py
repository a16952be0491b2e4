"""Port-forward and file copy with the Python client against the Python server."""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
from pathlib import Path

import pytest
import trio

from muxstream.remote import (
    copy_from_remote,
    copy_to_remote,
    open_port_forward,
    port_forward,
)

from ._remote_helpers import remote_server

TRANSPORTS = ["websocket", "spdy"]
COPY_BYTES = int(os.environ.get("MUXSTREAM_TEST_REMOTE_MIB", "32")) * 1024 * 1024 // 4


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)
        await stream.send_eof()


async def _round_trip(stream: trio.abc.HalfCloseableStream, payload: bytes) -> bytes:
    received = bytearray()

    async def send() -> None:
        await stream.send_all(payload)
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        async for chunk in stream:
            received += chunk
    return bytes(received)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_forwarded_connections_echo_in_parallel(transport: str) -> None:
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        echo_port = echo[0].socket.getsockname()[1]
        async with remote_server(transport) as endpoint:
            async with open_port_forward(endpoint, "demo") as forwarder:
                assert forwarder.transport == transport
                payloads = [os.urandom(n) for n in (0, 1, 100_000, 4 * 1024 * 1024)]
                results: dict[int, bytes] = {}

                async def one(i: int) -> None:
                    stream = await forwarder.connect(echo_port)
                    async with stream:
                        results[i] = await _round_trip(stream, payloads[i])

                with trio.fail_after(60):
                    async with trio.open_nursery() as inner:
                        for i in range(len(payloads)):
                            inner.start_soon(one, i)
        nursery.cancel_scope.cancel()
    assert [results[i] for i in range(len(payloads))] == payloads


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_local_listener_forwards_like_kubectl(transport: str) -> None:
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        echo_port = echo[0].socket.getsockname()[1]
        async with remote_server(transport) as endpoint:
            listeners = await nursery.start(
                functools.partial(port_forward, endpoint, "demo", echo_port)
            )
            local_port = listeners[0].socket.getsockname()[1]
            payload = os.urandom(2 * 1024 * 1024)
            with trio.fail_after(60):
                for _ in range(2):
                    conn = await trio.open_tcp_stream("127.0.0.1", local_port)
                    async with conn:
                        assert await _round_trip(conn, payload) == payload
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unreachable_port_reports_the_servers_reason(transport: str) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with remote_server(transport) as endpoint:
        async with open_port_forward(endpoint, "demo") as forwarder:
            stream = await forwarder.connect(closed_port)
            with trio.fail_after(30), pytest.raises(trio.BrokenResourceError) as info:
                await stream.receive_some()
    assert f"error forwarding port {closed_port}" in str(info.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_disallowed_port_is_refused(transport: str) -> None:
    async with remote_server(transport, allowed_ports={1}) as endpoint:
        async with open_port_forward(endpoint, "demo") as forwarder:
            stream = await forwarder.connect(22)
            with trio.fail_after(30), pytest.raises(trio.BrokenResourceError, match="not allowed"):
                await stream.receive_some()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_copy_file_both_ways_with_progress(transport: str, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(COPY_BYTES))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    up: list[tuple[int, int | None]] = []
    down: list[tuple[int, int | None]] = []
    (tmp_path / "remote").mkdir()
    async with remote_server(transport) as endpoint:
        sent = await copy_to_remote(
            endpoint,
            "demo",
            source,
            f"{tmp_path}/remote/copy.bin",
            progress=lambda done, total: up.append((done, total)),
        )
        back = tmp_path / "back.bin"
        await copy_from_remote(
            endpoint,
            "demo",
            f"{tmp_path}/remote/copy.bin",
            back,
            progress=lambda done, total: down.append((done, total)),
        )
    assert sent.size == sent.transferred == COPY_BYTES and sent.verified
    assert hashlib.sha256((tmp_path / "remote" / "copy.bin").read_bytes()).hexdigest() == digest
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert up[-1] == (COPY_BYTES, COPY_BYTES)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(up))
    assert down and down[-1][0] >= COPY_BYTES


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_copy_directory_both_ways(transport: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    async with remote_server(transport) as endpoint:
        await copy_to_remote(endpoint, "demo", tree, f"{tmp_path}/remote-tree")
        await copy_from_remote(endpoint, "demo", f"{tmp_path}/remote-tree", tmp_path / "again")
    for relative in ("a.txt", "sub/b.bin"):
        assert (tmp_path / "again" / relative).read_bytes() == (tree / relative).read_bytes()
