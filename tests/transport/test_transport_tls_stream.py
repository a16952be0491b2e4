"""TLSStream: trio's stream contract, bulk decryption, the close path, certificates.

Over in-memory transports (and TCP where the kernel matters), against itself
and against ``trio.SSLStream``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

import pytest
import trio
import trio.testing
import trustme

from muxstream.transport import TLSStream, open_tls_stream, wrap_tls_server

Pair = tuple[trio.abc.Stream, trio.abc.Stream]


async def tls_pair(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    transports: Pair | None = None,
    *,
    client_class: Callable[..., trio.abc.Stream] = TLSStream,
    server_class: Callable[..., trio.abc.Stream] = TLSStream,
    **options: object,
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A handshaken (client, server) pair over ``transports`` (a memory pair by default)."""
    a, b = transports or trio.testing.memory_stream_pair()
    client = client_class(a, client_context, server_hostname="localhost", **options)
    server = server_class(b, server_context, server_side=True, **options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)  # type: ignore[attr-defined]
        nursery.start_soon(server.do_handshake)  # type: ignore[attr-defined]
    return client, server


async def read_all(stream: trio.abc.ReceiveStream, max_bytes: int | None = None) -> bytes:
    out = bytearray()
    while chunk := await stream.receive_some(max_bytes):
        out += chunk
    return bytes(out)


# -- the trio stream contract -------------------------------------------------------------


async def test_tls_stream_passes_check_two_way_stream(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    async def maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        return await tls_pair(server_ssl_context, client_ssl_context)

    async def clogged() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        client, server = await tls_pair(server_ssl_context, client_ssl_context,
                                        trio.testing.lockstep_stream_pair())
        return client, server

    with trio.fail_after(60):
        await trio.testing.check_two_way_stream(maker, clogged)


@pytest.mark.parametrize("peer", ["TLSStream", "trio.SSLStream"])
async def test_tls_stream_talks_to_itself_and_to_trio(
    peer: str, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    other = TLSStream if peer == "TLSStream" else trio.SSLStream
    payload = os.urandom(700_000)
    for client_class, server_class in ((TLSStream, other), (other, TLSStream)):
        client, server = await tls_pair(server_ssl_context, client_ssl_context,
                                        client_class=client_class, server_class=server_class)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, payload)
                assert await server.receive_some(10) == payload[:10]
                got = bytearray(await server.receive_some(10))
                while len(got) < len(payload) - 10:
                    got += await server.receive_some()
            assert got == payload[10:]
            await server.send_all(b"reply")
            assert await client.receive_some() == b"reply"
            await client.aclose()
            assert await server.receive_some() == b""  # close_notify is EOF
            await server.aclose()


# -- bulk: every complete record at once ---------------------------------------------------


async def test_receive_returns_many_records_per_call(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    # 1 MiB is 64 records of 16 KiB: trio.SSLStream returns one per call; TLSStream
    # returns every complete record that fits in max_bytes.
    client, server = await tls_pair(server_ssl_context, client_ssl_context)
    payload = os.urandom(1 << 20)
    calls = 0
    got = bytearray()
    with trio.fail_after(30):
        await client.send_all(payload)
        while len(got) < len(payload):
            chunk = await server.receive_some(256 * 1024)
            assert 0 < len(chunk) <= 256 * 1024
            got += chunk
            calls += 1
    assert got == payload
    assert calls <= 8, calls


async def test_small_max_bytes_leaves_the_rest_for_later(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = await tls_pair(server_ssl_context, client_ssl_context)
    payload = os.urandom(100_000)
    with trio.fail_after(30):
        await client.send_all(payload)
        await client.aclose()
        got = bytearray()
        while chunk := await server.receive_some(777):
            assert len(chunk) <= 777
            got += chunk
    assert got == payload


def tls_records(wire: bytes) -> list[tuple[int, int]]:
    """(content type, length) of every TLS record in ``wire``."""
    records, pos = [], 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos + 3:pos + 5], "big")
        records.append((wire[pos], length))
        pos += 5 + length
    assert pos == len(wire)
    return records


@pytest.mark.parametrize("sizes", [
    [8, 524_288],  # a DATA frame: its header, then its payload
    [8, 3, 16_384, 8, 100_000, 1, 2, 0, 40_000],
    [12] * 5000,  # small frames: gathered, not a record each
    [16_384, 16_384, 5],
])
async def test_send_all_parts_sends_them_joined_in_full_records(
    sizes: list[int], server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext,
) -> None:
    # send_all of many buffers without joining them first: the peer reads them
    # joined, and small parts make no records of their own -- as few records
    # (of 16 KiB plaintext) as the bytes need, as send_all of the joined bytes.
    client, server = await tls_pair(server_ssl_context, client_ssl_context)
    assert isinstance(client, TLSStream)
    parts = [os.urandom(n) for n in sizes]
    wire = bytearray()
    transport = client.transport_stream
    forward = transport.send_all

    async def recording_send_all(data: bytes | bytearray | memoryview) -> None:
        wire.extend(data)
        await forward(data)

    transport.send_all = recording_send_all  # type: ignore[method-assign]
    total = sum(sizes)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all_parts, [memoryview(p) for p in parts])
            got = bytearray()
            while len(got) < total:
                got += await server.receive_some()
    assert got == b"".join(parts)
    application = [length for kind, length in tls_records(bytes(wire)) if kind == 23]
    assert len(application) == -(-total // 16_384)


async def test_cancelled_receive_loses_nothing(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = await tls_pair(server_ssl_context, client_ssl_context)
    with trio.move_on_after(0.01):
        await server.receive_some()  # nothing sent yet: cancelled while waiting
    with trio.fail_after(30):
        await client.send_all(b"still here")
        assert await server.receive_some() == b"still here"


# -- the close path ------------------------------------------------------------------------


class Relay(trio.abc.Stream):
    """A transport that passes everything to ``inner`` (subclasses watch or meddle)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


class Tap(Relay):
    """A transport that can corrupt the bytes it receives."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.corrupt_at: int | None = None  # flip the received byte at this offset
        self.received = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = bytes(await self.inner.receive_some(max_bytes))
        if self.corrupt_at is not None and self.received <= self.corrupt_at < (
                self.received + len(data)):
            i = self.corrupt_at - self.received
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        self.received += len(data)
        return data


@pytest.mark.parametrize("https_compatible", [False, True])
async def test_eof_without_close_notify_is_broken_unless_https_compatible(
    https_compatible: bool, server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    client, server = await tls_pair(server_ssl_context, client_ssl_context, (a, b),
                                    https_compatible=https_compatible)
    with trio.fail_after(30):
        await client.send_all(b"x" * 50_000)
        await a.aclose()  # the client's TCP goes away without close_notify (ragged EOF)
        got = bytearray()
        if https_compatible:
            got += await read_all(server)
        else:
            with pytest.raises(trio.BrokenResourceError) as info:
                while True:
                    got += await server.receive_some()
            assert isinstance(info.value.__cause__, ssl.SSLError)
            with pytest.raises(trio.BrokenResourceError):
                await server.receive_some()  # stays broken
        assert got == b"x" * 50_000  # every byte before the cut first


async def test_records_before_a_corrupt_one_are_delivered_then_broken(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = trio.testing.memory_stream_pair()
    tap = Tap(b)
    client, server = await tls_pair(server_ssl_context, client_ssl_context, (a, tap))
    with trio.fail_after(30):
        tap.corrupt_at = tap.received + 3 * 16_500  # inside the 4th record
        await client.send_all(b"y" * 100_000)
        got = bytearray()
        with pytest.raises(trio.BrokenResourceError) as info:
            while True:
                got += await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert got == b"y" * len(got) and len(got) >= 3 * 16384


async def test_aclose_sends_close_notify_without_waiting_for_the_peer(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = await tls_pair(server_ssl_context, client_ssl_context)
    with trio.fail_after(30):
        await client.send_all(b"last words")
        await client.aclose()  # the server is not reading: no wait for its close_notify
        assert await read_all(server) == b"last words"
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()


async def test_aclose_wakes_a_blocked_receiver_with_closed_resource_error(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = await tls_pair(server_ssl_context, client_ssl_context)

    async def blocked() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()
    await client.aclose()


async def test_close_path_over_tcp_loses_nothing(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    # The session's close over TLS, in miniature: send, close (close_notify), and
    # the peer reads every byte and then a clean EOF.
    payload = os.urandom(3 << 20)
    done = trio.Event()
    received = bytearray()

    async def handler(tcp: trio.SocketStream) -> None:
        tls = await wrap_tls_server(tcp, server_ssl_context)
        received.extend(await read_all(tls))
        await tls.aclose()
        done.set()

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(30):
        tls = await open_tls_stream("127.0.0.1", port, client_ssl_context,
                                    server_hostname="localhost")
        await tls.send_all(payload)
        await tls.aclose()
        await done.wait()
    assert received == payload


# -- handshake: SNI, ALPN, client certificates ---------------------------------------------


async def test_sni_and_alpn_as_with_trio(ca: trustme.CA) -> None:
    seen: list[str | None] = []
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    server_context.set_alpn_protocols(["h2", "spdy/3.1"])
    server_context.sni_callback = lambda sock, name, ctx: seen.append(name)  # type: ignore[assignment,misc,return-value]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_context.set_alpn_protocols(["spdy/3.1"])
    client, server = await tls_pair(server_context, client_context)
    assert seen == ["localhost"]
    assert client.selected_alpn_protocol() == "spdy/3.1"  # type: ignore[attr-defined]
    assert server.selected_alpn_protocol() == "spdy/3.1"  # type: ignore[attr-defined]
    assert client.version() == "TLSv1.3"  # type: ignore[attr-defined]


def client_cert_contexts(ca: trustme.CA, *, with_cert: bool) -> tuple[ssl.SSLContext,
                                                                      ssl.SSLContext]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    if with_cert:
        ca.issue_cert("client@example.org").configure_cert(client_context)
    return server_context, client_context


async def test_client_certificate_is_verified_and_visible(ca: trustme.CA) -> None:
    server_context, client_context = client_cert_contexts(ca, with_cert=True)
    _, server = await tls_pair(server_context, client_context)
    cert = server.getpeercert()  # type: ignore[attr-defined]
    assert ("email", "client@example.org") in cert["subjectAltName"]


async def test_missing_client_certificate_fails_the_handshake(ca: trustme.CA) -> None:
    server_context, client_context = client_cert_contexts(ca, with_cert=False)
    a, b = trio.testing.memory_stream_pair()
    client = TLSStream(a, client_context, server_hostname="localhost")
    server = TLSStream(b, server_context, server_side=True)

    async def client_side() -> None:
        # TLS 1.3: the client learns of the refusal on its first read.
        with pytest.raises(trio.BrokenResourceError):
            await client.do_handshake()
            await client.receive_some()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            with pytest.raises(trio.BrokenResourceError) as info:
                await server.do_handshake()
    assert isinstance(info.value.__cause__, ssl.SSLError)


class Gate(Relay):
    """A transport whose large sends wait for ``opened``; it records who sent what."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.opened = trio.Event()
        self.armed = False
        self.senders: list[str] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.senders.append(trio.lowlevel.current_task().name)
        if self.armed and len(data) > 100_000:
            await self.opened.wait()
        await self.inner.send_all(data)


@pytest.mark.parametrize("client_sending", [False, True])
async def test_records_made_by_the_reader_reach_the_peer(
    client_sending: bool, ca: trustme.CA
) -> None:
    # TLS 1.3 post-handshake authentication: reading the server's
    # CertificateRequest makes the client's reader produce its Certificate. The
    # reader sends it itself when no send is in progress; during a send, it leaves
    # it to the sender (which sends it right after its data), never blocking on it.
    server_context, client_context = client_cert_contexts(ca, with_cert=True)
    # CERT_REQUIRED with post_handshake_auth: no certificate asked in the handshake.
    server_context.post_handshake_auth = True
    client_context.post_handshake_auth = True
    a, b = trio.testing.memory_stream_pair()
    gate = Gate(a)
    client, server = await tls_pair(server_context, client_context, (gate, b))
    assert server.getpeercert() is None  # type: ignore[attr-defined]
    server._ssl.verify_client_post_handshake()  # type: ignore[attr-defined]

    later: list[bytes] = []

    async def client_reads() -> None:
        assert await client.receive_some() == b"who are you?"
        later.append(await client.receive_some())  # its certificate goes out first, if idle

    async def client_sends() -> None:
        await client.send_all(b"z" * 200_000)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await server.send_all(b"who are you?")  # carries the CertificateRequest
            if client_sending:
                gate.armed = True
                nursery.start_soon(client_sends, name="sender")
                await trio.testing.wait_all_tasks_blocked()  # the send waits at the gate
            gate.senders.clear()
            nursery.start_soon(client_reads, name="reader")
            await trio.testing.wait_all_tasks_blocked()
            # The reader is not held up by the send stuck at the gate.
            await server.send_all(b"still reading?")
            await trio.testing.wait_all_tasks_blocked()
            assert later == [b"still reading?"]
            gate.opened.set()
            if client_sending:
                assert await read_all_n(server, 200_000) == b"z" * 200_000
            while server.getpeercert() is None:  # type: ignore[attr-defined]
                with trio.move_on_after(0.05):
                    await server.receive_some()
            cert = server.getpeercert()  # type: ignore[attr-defined]
            assert ("email", "client@example.org") in cert["subjectAltName"]
            assert gate.senders == (["sender"] if client_sending else ["reader"]), gate.senders
            nursery.cancel_scope.cancel()


async def read_all_n(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += await stream.receive_some()
    return bytes(out)
