"""The shared client connect (``transport.open_tcp_or_tls_stream``): plain TCP without a
context, verified TLS with one; and ``open_tcp_session``, which uses it, over TLS."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

import muxstream
from muxstream.transport import (
    ConnectTimeout,
    HandshakeTimeout,
    TLSHandshakeTimeout,
    TLSStream,
    open_tcp_or_tls_stream,
)


async def _echo_listener(nursery: trio.Nursery, server_context: ssl.SSLContext | None) -> int:
    async def echo(tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        if server_context is not None:
            stream = trio.SSLStream(tcp, server_context, server_side=True)
        async with stream:
            while chunk := await stream.receive_some():
                await stream.send_all(chunk)

    listeners = await nursery.start(trio.serve_tcp, echo, 0)
    return int(listeners[0].socket.getsockname()[1])


async def _silent_listener(nursery: trio.Nursery) -> int:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    return int(listeners[0].socket.getsockname()[1])


async def _session_server(
    nursery: trio.Nursery,
    handler: Callable[[muxstream.Session], Awaitable[None]],
    server_context: ssl.SSLContext,
) -> int:
    listeners = await nursery.start(partial(
        muxstream.serve_tcp, handler, 0, ssl_context=server_context, keepalive_interval=None))
    return int(listeners[0].socket.getsockname()[1])


async def test_connect_without_a_context_is_plain_half_closeable_tcp(
    nursery: trio.Nursery,
) -> None:
    port = await _echo_listener(nursery, None)
    with trio.fail_after(20):
        stream = await open_tcp_or_tls_stream("127.0.0.1", port)
        assert isinstance(stream, trio.SocketStream)
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        await stream.aclose()


async def test_connect_with_a_context_is_tls_to_the_given_name(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    port = await _echo_listener(nursery, server_ssl_context)
    with trio.fail_after(20):
        stream = await open_tcp_or_tls_stream("127.0.0.1", port, ssl_context=client_ssl_context,
                               server_hostname="localhost")
        assert isinstance(stream, TLSStream)
        assert stream.server_hostname == "localhost"
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        await stream.aclose()


async def test_connect_refuses_a_certificate_for_another_name(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    port = await _echo_listener(nursery, server_ssl_context)
    with trio.fail_after(20), pytest.raises(trio.BrokenResourceError) as info:
        await open_tcp_or_tls_stream("127.0.0.1", port, ssl_context=client_ssl_context,
                      server_hostname="evil.example")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_connect_bounds_the_tls_handshake(
    nursery: trio.Nursery,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = await _silent_listener(nursery)
    with trio.fail_after(60), pytest.raises(TLSHandshakeTimeout) as info:
        await open_tcp_or_tls_stream("127.0.0.1", port, ssl_context=client_ssl_context,
                                     handshake_timeout=5.0)
    assert isinstance(info.value, HandshakeTimeout)  # what callers caught before


async def test_connect_bounds_the_tcp_connect(autojump_clock: trio.testing.MockClock) -> None:
    async def never(*args: object, **kwargs: object) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError

    original = trio.open_tcp_stream
    trio.open_tcp_stream = never  # type: ignore[assignment]
    try:
        with trio.fail_after(60), pytest.raises(ConnectTimeout) as info:
            await open_tcp_or_tls_stream("127.0.0.1", 9, connect_timeout=3.0)
    finally:
        trio.open_tcp_stream = original
    assert isinstance(info.value, trio.TooSlowError)
    assert "127.0.0.1:9" in str(info.value) and "3.0 s" in str(info.value)


async def test_open_tcp_session_over_tls(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    server_transports = []

    async def handler(session: muxstream.Session) -> None:
        server_transports.append(session.transport)
        stream = await session.accept()
        while chunk := await stream.receive_some():
            await stream.send_all(chunk)
        await stream.send_eof()

    port = await _session_server(nursery, handler, server_ssl_context)
    with trio.fail_after(20):
        # No server_hostname: the certificate is checked against the host (an IP SAN).
        async with muxstream.open_tcp_session("127.0.0.1", port, ssl_context=client_ssl_context,
                                              keepalive_interval=None) as session:
            assert isinstance(session.transport, TLSStream)
            assert session.transport.server_hostname == "127.0.0.1"
            stream = await session.open_stream({"streamtype": "data"})
            await stream.send_all(b"hello over tls")
            await stream.send_eof()
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
            assert received == b"hello over tls"
    # serve_tcp's side is muxstream's TLS stream too (one pass per 256 KiB read)
    assert [type(t) for t in server_transports] == [TLSStream]


async def test_open_tcp_session_empty_server_hostname_means_the_host(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    async def handler(session: muxstream.Session) -> None:
        await trio.sleep_forever()

    port = await _session_server(nursery, handler, server_ssl_context)
    with trio.fail_after(20):
        async with muxstream.open_tcp_session("127.0.0.1", port, ssl_context=client_ssl_context,
                                              server_hostname="", keepalive_interval=None,
                                              close_timeout=0.1) as session:
            assert isinstance(session.transport, TLSStream)
            assert session.transport.server_hostname == "127.0.0.1"


async def test_open_tcp_session_tls_handshake_timeout_is_too_slow_error(
    nursery: trio.Nursery,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = await _silent_listener(nursery)
    with trio.fail_after(60), pytest.raises(trio.TooSlowError):
        async with muxstream.open_tcp_session("127.0.0.1", port, ssl_context=client_ssl_context,
                                              handshake_timeout=5.0):
            pytest.fail("the handshake cannot have finished")



@pytest.mark.parametrize("https_compatible", [False, True])
async def test_connect_passes_https_compatible_to_the_tls_stream(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    https_compatible: bool,
) -> None:
    port = await _echo_listener(nursery, server_ssl_context)
    with trio.fail_after(20):
        stream = await open_tcp_or_tls_stream("127.0.0.1", port, ssl_context=client_ssl_context,
                               server_hostname="localhost", https_compatible=https_compatible)
        assert isinstance(stream, TLSStream)
        assert stream._https_compatible is https_compatible
        await stream.aclose()


async def test_remote_endpoint_connects_https_compatible(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    from muxstream.remote import RemoteEndpoint

    port = await _echo_listener(nursery, server_ssl_context)
    endpoint = RemoteEndpoint(f"https://localhost:{port}", ssl_context=client_ssl_context)
    with trio.fail_after(20):
        stream, host = await endpoint.connect()
    assert isinstance(stream, TLSStream) and stream._https_compatible is True
    assert host == f"localhost:{port}"
    await stream.aclose()


async def test_remote_endpoint_connect_is_bounded_by_connect_timeout(
    nursery: trio.Nursery,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    from muxstream.remote import RemoteEndpoint

    async def silent(stream: trio.SocketStream) -> None:  # never answers the TLS handshake
        await trio.sleep_forever()

    # A numeric address: resolving a name runs in a thread, during which the
    # autojump clock would jump past the (per phase) TCP connect bound.
    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    slow = RemoteEndpoint(f"https://127.0.0.1:{port}", ssl_context=client_ssl_context,
                          connect_timeout=7)
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(TLSHandshakeTimeout):  # a TooSlowError
        await slow.connect()
    assert trio.current_time() - start == pytest.approx(7)  # the TLS handshake's own bound
