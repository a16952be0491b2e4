"""TLS helpers with certificates made at test time (trustme)."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from muxstream.transport import HandshakeTimeout, open_tls_stream, wrap_tls_server


async def start_tls_echo(nursery: trio.Nursery, server_context: ssl.SSLContext) -> int:
    async def handler(stream: trio.SocketStream) -> None:
        try:
            tls = await wrap_tls_server(stream, server_context)
        except trio.BrokenResourceError:
            return
        async with tls:
            while chunk := await tls.receive_some():
                await tls.send_all(chunk)

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_tls_echo_and_close_notify(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    port = await start_tls_echo(nursery, server_ssl_context)
    with trio.fail_after(20):
        tls = await open_tls_stream(
            "127.0.0.1", port, client_ssl_context, server_hostname="localhost"
        )
        assert tls.selected_alpn_protocol() is None
        await tls.send_all(b"secret" * 10000)
        got = bytearray()
        while len(got) < 60000:
            got += await tls.receive_some()
        assert got == b"secret" * 10000
        await tls.aclose()  # sends close_notify; the server sees a clean EOF and closes


async def test_tls_untrusted_certificate_fails_at_open(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext
) -> None:
    port = await start_tls_echo(nursery, server_ssl_context)
    with trio.fail_after(20), pytest.raises(trio.BrokenResourceError) as info:
        await open_tls_stream(
            "127.0.0.1", port, ssl.create_default_context(), server_hostname="localhost"
        )
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_tls_wrong_hostname_fails_at_open(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    port = await start_tls_echo(nursery, server_ssl_context)
    with trio.fail_after(20), pytest.raises(trio.BrokenResourceError) as info:
        await open_tls_stream("127.0.0.1", port, client_ssl_context, server_hostname="evil.example")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_tls_client_handshake_timeout(
    nursery: trio.Nursery,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(60), pytest.raises(HandshakeTimeout):
        await open_tls_stream("127.0.0.1", port, client_ssl_context, handshake_timeout=5.0)


async def test_tls_server_handshake_timeout_closes_stream(
    server_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    client_side, server_side = trio.testing.memory_stream_pair()
    with trio.fail_after(60), pytest.raises(HandshakeTimeout):
        await wrap_tls_server(server_side, server_ssl_context, handshake_timeout=5.0)
    with pytest.raises(trio.BrokenResourceError):
        await client_side.send_all(b"hello?")  # the server closed its end
