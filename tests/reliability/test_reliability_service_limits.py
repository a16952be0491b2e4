"""Limits before and after authentication: a flood of sockets, idle connections,
bodies, processes and forwarded connections cannot take the service down, and a
client with the token still gets in.

The accept loop's bookkeeping is tested with trio's autojump clock over memory
streams; the service's limits on loopback with small values.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

import muxstream
from muxstream.remote import (
    STREAM_PROTOCOL_V4,
    RemoteError,
    ServiceLimits,
    open_port_forward,
    open_remote_process,
)

from ._security_helpers import (
    EXEC,
    TOKEN,
    TRANSPORTS,
    cli_service,
    exchange,
    exec_query,
    exec_service,
    plain_endpoint,
    upgrade_head,
)

# --- the accept loop (memory streams, autojump clock) ----------------------------------


class FakeListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands out one end of a memory stream pair per connect(); accept() can be
    told to fail with EMFILE first."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](100)
        self.emfile = 0

    def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self._send.send_nowait(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        stream = await self._receive.receive()
        if self.emfile:
            self.emfile -= 1
            await self._send.send(stream)  # still pending after the failure
            raise OSError(errno.EMFILE, "Too many open files")
        return stream

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def closed(stream: trio.abc.Stream) -> bool:
    """Whether the server end has gone (EOF or broken); waits a millisecond of
    trio's clock (a zero timeout would cancel before the stream is looked at)."""
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(0.001):
        try:
            return await stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True
    return False


@asynccontextmanager
async def accept_loop(
    handler: Callable[[Any], Any], **limits: Any
) -> AsyncIterator[FakeListener]:
    from muxstream.transport import ConnectionLimits, serve_connections

    listener = FakeListener()
    settings = {"max_connections": 10, "max_unauthenticated": 5, "auth_timeout": 10.0, **limits}
    async with trio.open_nursery() as nursery:
        await nursery.start(
            serve_connections, handler, [cast(trio.SocketListener, listener)],
            ConnectionLimits(**settings),
        )
        yield listener
        nursery.cancel_scope.cancel()


async def idle(_stream: trio.abc.Stream) -> None:
    await trio.sleep_forever()


async def authenticates(_stream: trio.abc.Stream) -> None:
    from muxstream.transport import current_connection

    info = current_connection()
    assert info is not None
    info.mark_authenticated()
    await trio.sleep_forever()


async def test_an_unauthenticated_connection_is_closed_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with accept_loop(idle) as listener:
        client = listener.connect()
        await trio.sleep(9.9)
        assert not await closed(client)
        await trio.sleep(0.2)
        assert await closed(client)


async def test_an_authenticated_connection_has_no_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with accept_loop(authenticates) as listener:
        client = listener.connect()
        await trio.sleep(3600)
        assert not await closed(client)


async def test_a_new_connection_evicts_the_oldest_unauthenticated_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with accept_loop(idle, max_unauthenticated=3) as listener:
        clients = []
        for _ in range(5):
            clients.append(listener.connect())
            await trio.testing.wait_all_tasks_blocked()
        assert [await closed(c) for c in clients] == [True, True, False, False, False]


async def test_at_the_limit_only_an_unauthenticated_connection_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def first_two_authenticate(stream: trio.abc.Stream) -> None:
        nonlocal served
        served += 1
        if served <= 2:
            await authenticates(stream)
        await idle(stream)

    served = 0
    async with accept_loop(first_two_authenticate, max_connections=3) as listener:
        clients = []
        for _ in range(5):
            clients.append(listener.connect())
            await trio.testing.wait_all_tasks_blocked()
        # Two authenticated keep their slots; the unauthenticated third made room
        # for the fourth, which made room for the fifth.
        assert [await closed(c) for c in clients] == [False, False, True, True, False]
    async with accept_loop(authenticates, max_connections=2) as listener:
        clients = []
        for _ in range(3):
            clients.append(listener.connect())
            await trio.testing.wait_all_tasks_blocked()
        assert [await closed(c) for c in clients] == [False, False, True]  # all full


async def test_out_of_descriptors_the_oldest_unauthenticated_connection_goes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with accept_loop(idle) as listener:
        first, second = listener.connect(), listener.connect()
        await trio.testing.wait_all_tasks_blocked()
        listener.emfile = 1
        start = trio.current_time()
        third = listener.connect()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == start  # no pause: a descriptor was freed
        assert [await closed(c) for c in (first, second, third)] == [True, False, False]


# --- the service on loopback ------------------------------------------------------------

FAST = ServiceLimits(auth_timeout=0.5)


async def test_an_unauthenticated_keep_alive_connection_is_closed_at_the_deadline(
    tmp_path: Path,
) -> None:
    """Refusals that keep the connection open (a 403 for an Origin) do not extend it."""
    head = upgrade_head(exec_query("true"), extra=[b"Origin: https://evil.example"])
    async with exec_service(tmp_path, limits=FAST) as (port, spy):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            async with stream:
                answers = b""
                while True:
                    try:
                        await stream.send_all(head)
                    except trio.BrokenResourceError:
                        break
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    answers += chunk
                    await trio.sleep(0.05)
    assert answers.count(b" 403 ") >= 2  # it was kept alive, then cut
    assert spy.started == []


async def test_an_unauthenticated_raw_session_is_closed_at_the_deadline(tmp_path: Path) -> None:
    async with cli_service(tmp_path, limits=FAST) as (port, _spy):
        with trio.fail_after(10):
            idle_one = await trio.open_tcp_stream("127.0.0.1", port)
            async with muxstream.open_session(idle_one, role=muxstream.CLIENT) as session:
                with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
                    while True:
                        await session.ping()
                        await trio.sleep(0.05)
            good = await trio.open_tcp_stream("127.0.0.1", port)
            async with muxstream.open_session(good, role=muxstream.CLIENT) as session:
                hello = await session.open_stream(
                    {"service": "hello", "authorization": f"Bearer {TOKEN}"}, end_stream=True
                )
                assert b"muxstream" in await hello.receive_all()
                await trio.sleep(1.0)  # twice the deadline: authenticated, it stays
                await session.ping()


@pytest.mark.parametrize("path", [EXEC + "?command=true", "/muxstream", "/version"])
async def test_a_request_body_is_refused_before_it_is_read(path: str, tmp_path: Path) -> None:
    """No token, a 1 MiB body announced and not sent: the answer must not wait for it."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    async with cli_service(tmp_path) as (port, spy):
        with trio.fail_after(5):
            status, _body = await exchange(port, head)
    assert status == 413
    assert spy.started == []


async def test_exec_beyond_the_process_limit_is_429(tmp_path: Path) -> None:
    limits = ServiceLimits(max_processes=2)
    async with exec_service(tmp_path, limits=limits) as (port, spy):
        endpoint = plain_endpoint(port, "spdy")
        with trio.fail_after(30):
            async with open_remote_process(endpoint, "demo", ["sleep", "30"]):
                async with open_remote_process(endpoint, "demo", ["sleep", "31"]):
                    for kind in TRANSPORTS:
                        status, body = await exchange(
                            port, upgrade_head(exec_query("touch", "x"), kind=kind)
                        )
                        assert status == 429 and b"too many commands" in body
                    with pytest.raises(RemoteError, match="too many commands"):
                        async with open_remote_process(endpoint, "demo", ["true"]):
                            pass
            # Both ended: room again.
            async with open_remote_process(endpoint, "demo", ["true"]) as process:
                assert await process.wait() == 0
    assert [r.command[0] for r in spy.started] == ["sleep", "sleep", "true"]
    assert not (tmp_path / "x").exists()


@asynccontextmanager
async def echo_listener() -> AsyncIterator[int]:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send_all(chunk)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0,
                                                          host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_forwarded_connections_are_bounded_per_session_and_in_all(tmp_path: Path) -> None:
    limits = ServiceLimits(max_forwards_per_session=2, max_forwards=3)
    async with echo_listener() as target, exec_service(tmp_path, limits=limits) as (port, _):
        endpoint = plain_endpoint(port, "spdy")
        with trio.fail_after(30):
            async with open_port_forward(endpoint, "demo") as one, open_port_forward(
                endpoint, "demo"
            ) as two:
                held = [await one.connect(target), await one.connect(target)]
                for stream in held:  # both work
                    await stream.send_all(b"x")
                    assert await stream.receive_some() == b"x"
                third = await one.connect(target)
                with pytest.raises(trio.BrokenResourceError, match="in this session"):
                    await third.receive_some()
                held.append(await two.connect(target))  # the server's third
                fourth = await two.connect(target)
                with pytest.raises(trio.BrokenResourceError, match="on this server"):
                    await fourth.receive_some()
                await held[0].aclose()  # frees a slot in session one and in all
                with trio.fail_after(5):
                    while True:
                        again = await one.connect(target)
                        await again.send_all(b"y")
                        try:
                            assert await again.receive_some() == b"y"
                            break
                        except trio.BrokenResourceError:
                            await trio.sleep(0.01)  # the close is still on its way


async def test_an_exec_session_announces_the_service_window(tmp_path: Path) -> None:
    """Each session's receive window is the service's budget (8 MiB), not the
    library's 64 MiB: what one authenticated client can make the server buffer."""
    from muxstream.transport import open_upgraded_stream

    async with exec_service(tmp_path) as (port, _spy):
        with trio.fail_after(30):
            stream, _response = await open_upgraded_stream(
                "127.0.0.1", port, exec_query("sleep", "5"), method="POST",
                headers=[("authorization", f"Bearer {TOKEN}"),
                         ("x-stream-protocol-version", STREAM_PROTOCOL_V4)],
            )
            async with muxstream.open_session(stream, role=muxstream.CLIENT) as session:
                error = await session.open_stream({"streamtype": "error"})
                out = await session.open_stream({"streamtype": "stdout"})
                err = await session.open_stream({"streamtype": "stderr"})
                await session.ping()  # the server's SETTINGS/WINDOW_UPDATE are in
                window = session.statistics().their_session_window
                for s in (error, out, err):
                    s.reset()
    assert window <= 8 << 20
