"""Faults: peers that die, links that are cut or go silent, resets, half-closes.

Every stream must end with a clear error (``trio.BrokenResourceError`` chained to
a muxstream error that says what happened), every background task must exit and
no file descriptor may leak: each test counts ``/proc/self/fd`` and the trio
tasks before and after.
"""

from __future__ import annotations

import gc
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import muxstream
from muxstream import SERVER
from muxstream.protocol import GoAwayFrame, SynReplyFrame

from ._helpers import (
    NO_KEEPALIVE,
    data_frame,
    open_fds,
    start_session_with_raw_peer,
    syn_stream,
    task_count,
)

MiB = 1 << 20

PEER_SCRIPT = textwrap.dedent(
    """
    import sys, trio, muxstream

    async def main(port, mode):
        async with muxstream.open_tcp_session("127.0.0.1", port,
                                              keepalive_interval=None) as session:
            stream = await session.open_stream({"streamtype": mode})
            print("ready", flush=True)
            if mode == "producer":
                chunk = b"p" * 65536
                while True:
                    await stream.send_all(chunk)
            else:
                while True:
                    await stream.receive_some(4096)
                    await trio.sleep(0.01)

    trio.run(main, int(sys.argv[1]), sys.argv[2])
    """
)


@asynccontextmanager
async def no_leaks() -> AsyncIterator[None]:
    """Check that the block leaves no extra fds or trio tasks behind."""
    gc.collect()  # close what earlier tests left for the collector before counting
    fds, tasks = open_fds(), task_count()
    yield
    with trio.fail_after(10):
        while task_count() > tasks:
            await trio.sleep(0.01)
    gc.collect()
    assert open_fds() <= fds  # fewer is fine (others' leftovers collected meanwhile)
    assert task_count() == tasks


def _assert_clear_error(exc: BaseException, *causes: type[BaseException]) -> None:
    assert isinstance(exc, trio.BrokenResourceError), repr(exc)
    assert isinstance(exc.__cause__, causes), repr(exc.__cause__)


@pytest.mark.parametrize("mode", ["producer", "consumer"])
async def test_peer_process_killed_mid_transfer(mode: str) -> None:
    """A subprocess peer is SIGKILLed while data flows; our stream ends with a clear
    error, the session's tasks exit and every fd (socket, pipes) is released."""
    async with no_leaks():
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(lambda task_status: trio.run_process(
                [sys.executable, "-c", PEER_SCRIPT, str(port), mode],
                stdout=subprocess.DEVNULL, check=False, task_status=task_status))
            with trio.fail_after(30):
                tcp = await listeners[0].accept()
            await listeners[0].aclose()
            errors: list[BaseException] = []
            with trio.fail_after(60):
                async with muxstream.open_session(tcp, role=SERVER, **NO_KEEPALIVE) as session:
                    stream = await session.accept()
                    moved = 0
                    try:
                        while True:
                            if mode == "producer":
                                moved += len(await stream.receive_some())
                            else:
                                await stream.send_all(b"c" * 65536)
                                moved += 65536
                            if moved >= 4 * MiB and proc.returncode is None:
                                proc.kill()
                    except trio.BrokenResourceError as exc:
                        errors.append(exc)
                    with pytest.raises(trio.BrokenResourceError):
                        await session.open_stream(timeout=5)
            await proc.wait()
        assert moved >= 4 * MiB
        assert len(errors) == 1
        _assert_clear_error(errors[0], muxstream.ConnectionLost)


async def test_rst_from_the_peer_wakes_every_call_with_connection_lost() -> None:
    """The peer closes with SO_LINGER 0 (TCP RST) while we send, receive and accept."""
    async with no_leaks():
        errors: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            session, peer = await start_session_with_raw_peer(nursery)
            await peer.send(syn_stream(peer, 1) + syn_stream(peer, 3))
            receiver = await session.accept()
            sender = await session.accept()

            async def record(call: object) -> None:
                try:
                    await call  # type: ignore[misc]
                except trio.BrokenResourceError as exc:
                    errors.append(exc)

            async def send_forever() -> None:
                while True:
                    await sender.send_all(bytes(MiB))

            nursery.start_soon(record, receiver.receive_some())
            nursery.start_soon(record, send_forever())
            nursery.start_soon(record, session.accept())
            nursery.start_soon(record, session.ping(timeout=30))
            await trio.testing.wait_all_tasks_blocked()
            sock = peer.transport.socket  # type: ignore[attr-defined]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            with trio.fail_after(10):
                while len(errors) < 4:
                    await trio.sleep(0.01)
            assert session.error is not None
            await session.aclose()
        for exc in errors:
            _assert_clear_error(exc, muxstream.ConnectionLost)


class CuttableLink:
    """A pair of transports that can be cut: afterwards nothing passes either way.

    ``silent`` cuts model a dead path (a half-open connection): sends still
    "succeed" and reads wait forever, as after a router reboot. Loud cuts fail
    both ends at once, like a reset.
    """

    def __init__(self) -> None:
        self.cut = False
        self.silent = True
        a, b = trio.testing.memory_stream_pair()
        self.ends = (_CutEnd(self, a), _CutEnd(self, b))


class _CutEnd(trio.abc.HalfCloseableStream):
    def __init__(self, link: CuttableLink, inner: trio.abc.HalfCloseableStream) -> None:
        self.link = link
        self.inner = inner

    def _check(self) -> None:
        if self.link.cut and not self.link.silent:
            raise trio.BrokenResourceError("link cut")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check()
        if self.link.cut:
            await trio.lowlevel.checkpoint()
            return  # swallowed by the dead path
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._check()
        if self.link.cut:
            await trio.sleep_forever()
        data = await self.inner.receive_some(max_bytes)
        self._check()
        if self.link.cut:
            await trio.sleep_forever()
        return data

    async def send_eof(self) -> None:
        self._check()
        if not self.link.cut:
            await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_half_open_connection_is_detected_by_keepalive_on_both_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The path dies silently mid-transfer: no FIN, no RST. Both keepalives notice
    within interval + timeout, and every stream ends with KeepaliveTimeout."""
    link = CuttableLink()
    errors: dict[str, BaseException] = {}
    async with no_leaks():
        async with trio.open_nursery() as nursery:

            async def side(name: str, end: _CutEnd, role: muxstream.Role) -> None:
                async with muxstream.open_session(end, role=role, keepalive_interval=10,
                                                  ping_timeout=5) as session:
                    if role is SERVER:
                        stream = await session.accept()
                    else:
                        stream = await session.open_stream()
                    try:
                        while True:
                            await stream.send_all(b"x" * 1000)
                            await stream.receive_some()
                            await trio.sleep(0.1)  # lets the virtual clock move
                    except trio.BrokenResourceError as exc:
                        errors[name] = exc

            nursery.start_soon(side, "server", link.ends[1], SERVER)
            nursery.start_soon(side, "client", link.ends[0], muxstream.CLIENT)
            await trio.sleep(3)
            link.cut = True
            start = trio.current_time()
        assert trio.current_time() - start <= 10 + 5 + 1
    assert set(errors) == {"client", "server"}
    for exc in errors.values():
        _assert_clear_error(exc, muxstream.KeepaliveTimeout)


async def test_connection_cut_in_both_directions_fails_both_ends_cleanly() -> None:
    link = CuttableLink()
    link.silent = False
    errors: dict[str, BaseException] = {}
    async with no_leaks():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                ready = trio.Event()

                async def side(name: str, end: _CutEnd, role: muxstream.Role) -> None:
                    async with muxstream.open_session(end, role=role, **NO_KEEPALIVE) as session:
                        if role is SERVER:
                            stream = await session.accept()
                            ready.set()
                        else:
                            stream = await session.open_stream()
                        try:
                            while True:
                                await stream.send_all(b"y" * 10000)
                                await stream.receive_some()
                        except trio.BrokenResourceError as exc:
                            errors[name] = exc

                nursery.start_soon(side, "server", link.ends[1], SERVER)
                nursery.start_soon(side, "client", link.ends[0], muxstream.CLIENT)
                await ready.wait()
                await trio.sleep(0.05)
                link.cut = True
    assert set(errors) == {"client", "server"}
    for exc in errors.values():
        _assert_clear_error(exc, muxstream.ConnectionLost)


async def test_peer_that_half_closes_and_keeps_reading_gets_everything_we_queued() -> None:
    """The peer sends its frames then a TCP FIN (no GOAWAY) and keeps reading: what
    we had queued still reaches it, then our GOAWAY and FIN; our stream raises a
    clear error only for sends after its EOF."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with no_leaks():
        async with trio.open_nursery() as nursery:
            session, peer = await start_session_with_raw_peer(nursery, initial_window=4 * MiB)
            await peer.send(syn_stream(peer, 1))
            stream = await session.accept()
            await stream.send_all(payload)
            await peer.send(data_frame(1, b"last words", flags=1))  # FIN on the stream
            peer.transport.socket.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]
            assert await stream.receive_all() == b"last words"
            got = bytearray()
            with trio.fail_after(30):
                while (frames := await peer.read(1 << 20)) is not None:
                    for f in frames:
                        if hasattr(f, "data") and getattr(f, "stream_id", 0) == 1:
                            got += f.data
            assert bytes(got) == payload
            assert any(isinstance(f, SynReplyFrame) for f in peer.frames)
            assert isinstance(peer.frames[-1], GoAwayFrame)
            with trio.fail_after(10):
                while not session.closed:
                    await trio.sleep(0.01)
            with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
                await stream.send_all(b"too late")
            await peer.transport.aclose()
