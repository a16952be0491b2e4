"""Session-level interop over real TCP: muxstream sessions against Go spdystream
peers (tests/interop/go/spdypeer), in both roles and both directions.

What each Go peer does is in peers.go; it reports JSON, including a count of the
frame types spdystream's read side received (decoded by a second framer on a tap
of its socket) and any decoding error that tap hit.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
import trio

import muxstream

#: Bound on one test (a bulk test moves tens of MiB through a slow reader).
TIMEOUT = 120


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def start_server(nursery: trio.Nursery, handler: Any, **options: Any) -> int:
    listeners = await nursery.start(lambda task_status: muxstream.serve_tcp(
        handler, 0, task_status=task_status, **options))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def echo_stream(stream: muxstream.Stream) -> None:
    async with stream:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()


# --- Go client -> muxstream echo server ------------------------------------------


@pytest.mark.parametrize(("n_streams", "size"), [(8, 300_000), (100, 10_000)])
async def test_go_client_streams_echoed_by_muxstream_server(
    spdypeer: Any, n_streams: int, size: int
) -> None:
    seen: list[muxstream.Headers] = []

    async def handler(session: muxstream.Session) -> None:
        async with trio.open_nursery() as nursery:
            async for stream in session:
                seen.append(stream.headers)
                nursery.start_soon(echo_stream, stream)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, handler)
            async with spdypeer.run("client", "-connect", f"127.0.0.1:{port}",
                                    "-streams", str(n_streams), "-size", str(size)) as go:
                result = await go.read_event("done")
                await go.wait()
            nursery.cancel_scope.cancel()

    assert len(result["streams"]) == n_streams
    for s in result["streams"]:
        assert s.get("error", "") == "", s
        assert s["received"] == s["sent"] == size + 1000 * s["index"]
        assert s["received_sha256"] == s["sent_sha256"]
    assert result["ping_error"] == ""
    assert result["close_error"] == ""
    assert result["tap_error"] == ""
    assert result["received_frames"]["SYN_REPLY"] == n_streams
    kinds = ["stdin", "stdout", "stderr", "error", "resize", "data"]
    by_index = {int(h["requestid"]): h for h in seen}
    assert sorted(by_index) == list(range(n_streams))
    for i, h in by_index.items():
        assert h["streamtype"] == kinds[i % len(kinds)]
        assert h["port"] == str(8000 + i)
        assert h.get_all("x-multi") == ["first", str(i), "last"]


# --- muxstream client -> Go echo server ------------------------------------------


async def test_muxstream_client_streams_echoed_by_go_server(spdypeer: Any) -> None:
    sizes = [0, 1, 65_535, 65_536, 300_000, 1 << 20, 3 << 20, 5_000]
    echoes: dict[int, tuple[int, str]] = {}
    replies: dict[int, muxstream.Headers] = {}
    sent: dict[int, tuple[int, str]] = {}

    async def one_stream(session: muxstream.Session, i: int) -> None:
        data = payload(i, sizes[i])
        stream = await session.open_stream(headers={
            "streamtype": "stdin", "requestid": str(i), "port": str(9000 + i),
            "x-multi": ["a", str(i)], "X-Upper": "v"})
        replies[i] = stream.reply_headers
        sent[stream.stream_id] = (len(data), hashlib.sha256(data).hexdigest())

        async def sender() -> None:
            view = memoryview(data)
            for off in range(0, len(data), 200_000):
                await stream.send_all(view[off:off + 200_000])
            await stream.send_eof()

        digest = hashlib.sha256()
        count = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            while chunk := await stream.receive_some():
                digest.update(chunk)
                count += len(chunk)
        await stream.aclose()
        echoes[i] = (count, digest.hexdigest())

    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("echo-server") as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                async with trio.open_nursery() as nursery:
                    for i in range(len(sizes)):
                        nursery.start_soon(one_stream, session, i)
                rtt = await session.ping()
            report = await go.read_event("session_closed")
            await go.close_stdin()
            await go.wait()

    assert rtt > 0
    for i, size in enumerate(sizes):
        assert echoes[i] == (size, hashlib.sha256(payload(i, size)).hexdigest())
        assert replies[i]["x-reply"] == "ok"
    assert report["tap_error"] == ""
    go_streams = {s["stream_id"]: s for s in report["streams"]}
    assert sorted(go_streams) == sorted(sent)
    for sid, (count, digest) in sent.items():
        s = go_streams[sid]
        assert (s["bytes"], s["sha256"]) == (count, digest)
        assert s.get("error", "") == ""
        headers = s["headers"]
        assert headers["streamtype"] == ["stdin"]
        assert headers["x-multi"] == ["a", headers["requestid"][0]]
        assert headers["x-upper"] == ["v"]
    frames = report["received_frames"]
    assert frames["SYN_STREAM"] == len(sizes)
    assert frames["GOAWAY"] == 1
    assert frames.get("RST_STREAM", 0) == 0


# --- muxstream producer -> slow, pinging Go consumer ------------------------------

BULK = 32 << 20


async def produce(session: muxstream.Session, total: int, chunk: int, seed: int) -> str:
    """Send ``total`` bytes on one new stream and FIN it; returns the digest. The
    caller closes the session as soon as this returns."""
    digest = hashlib.sha256()
    block = payload(seed, chunk)
    stream = await session.open_stream(headers={"streamtype": "data", "x-producer": "py"})
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        # Vary every block so that a lost or repeated block changes the digest.
        data = sent.to_bytes(8, "big") + block[8:n]
        digest.update(data)
        await stream.send_all(data)
        sent += n
    await stream.send_eof()
    return digest.hexdigest()


#: The Go consumer: 64 KiB reads with a 2 ms pause after each, a ping every 50 ms,
#: and a 256 KiB receive buffer (loopback autotuning would grow it to 32 MiB and
#: absorb most of the transfer, hiding the close-path problem).
CONSUMER_ARGS = ("-ping-interval", "50ms", "-read-delay", "2ms", "-read-size", "65536",
                 "-rcvbuf", "262144")


@pytest.mark.parametrize("go_role", ["server", "client"])
async def test_pinging_go_consumer_gets_every_byte_when_muxstream_closes_at_once(
    spdypeer: Any, go_role: str
) -> None:
    """The close-path scenario against spdystream: the Go consumer reads slowly and
    pings every 50 ms; muxstream sends far more than the socket buffers hold and
    closes the session as soon as its last send_all returns (leaving
    open_tcp_session, or returning from the serve_tcp handler)."""
    for run in range(2):
        digests: list[str] = []

        async def handler(session: muxstream.Session, run: int = run,
                          digests: list[str] = digests) -> None:
            digests.append(await produce(session, BULK, 1 << 20, seed=run))

        with trio.fail_after(TIMEOUT):
            if go_role == "server":
                async with spdypeer.run("consumer", "-listen", "127.0.0.1:0",
                                        *CONSUMER_ARGS) as go:
                    port = await go.listening_port()
                    async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                        await handler(session)
                    result = await go.read_event("done")
                    await go.wait()
            else:
                async with trio.open_nursery() as nursery:
                    port = await start_server(nursery, handler)
                    async with spdypeer.run("consumer", "-connect", f"127.0.0.1:{port}",
                                            *CONSUMER_ARGS) as go:
                        result = await go.read_event("done")
                        await go.wait()
                    nursery.cancel_scope.cancel()
        assert result["read_error"] == ""
        assert result["bytes"] == BULK, f"run {run}: {BULK - result['bytes']} bytes lost: {result}"
        assert result["sha256"] == digests[0]
        assert result["pings"]["count"] > 0, "the consumer never got a ping answered"
        assert result["peer_closed"] is True
        assert result["tap_error"] == ""
        assert result["headers"]["x-producer"] == ["py"]
        assert result["stream_id"] % 2 == (1 if go_role == "server" else 0)


async def test_muxstream_sender_does_not_stall_against_spdystream(spdypeer: Any) -> None:
    """spdystream never sends WINDOW_UPDATE; muxstream must not wait for one. Four
    streams each send 64x the SPDY default window, with a small configured window."""
    total = 4 << 20
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("echo-server") as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port,
                                                  initial_window=65536) as session:

                async def one(i: int) -> None:
                    stream = await session.open_stream(headers={"requestid": str(i)})
                    data = payload(100 + i, total)

                    async def drain() -> None:
                        n = 0
                        while chunk := await stream.receive_some():
                            n += len(chunk)
                        assert n == total

                    async with trio.open_nursery() as inner:
                        inner.start_soon(drain)
                        await stream.send_all(data)
                        await stream.send_eof()

                async with trio.open_nursery() as nursery:
                    for i in range(4):
                        nursery.start_soon(one, i)
            report = await go.read_event("session_closed")
            await go.close_stdin()
            await go.wait()
    assert [s["bytes"] for s in report["streams"]] == [total] * 4
    assert report["tap_error"] == ""


# --- Go producer -> muxstream consumer --------------------------------------------


async def consume(session: muxstream.Session, out: dict[str, Any]) -> None:
    """Accept one stream, read it to EOF while pinging every 50 ms, then close."""
    stream = await session.accept()
    out["headers"] = stream.headers
    digest = hashlib.sha256()
    count = 0
    rtts: list[float] = []

    async def pinger() -> None:
        # Pings stop being possible once the peer's GOAWAY has arrived, while
        # buffered data is still being read.
        while True:
            try:
                rtts.append(await session.ping())
            except trio.BrokenResourceError:
                return
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pinger)
        while chunk := await stream.receive_some(65536):
            digest.update(chunk)
            count += len(chunk)
        nursery.cancel_scope.cancel()
    await stream.aclose()
    out.update(bytes=count, sha256=digest.hexdigest(), pings=len(rtts))


@pytest.mark.parametrize("go_role", ["client", "server"])
@pytest.mark.parametrize("chunk", [64 << 10, 4 << 20], ids=["64KiB-frames", "4MiB-frames"])
async def test_muxstream_consumer_gets_every_byte_from_closing_go_producer(
    spdypeer: Any, go_role: str, chunk: int
) -> None:
    """The reverse direction: spdystream sends (one DATA frame per Write call, so
    4 MiB frames too), FINs and closes at once (GOAWAY, then the socket once the
    stream is finished); muxstream reads it all while pinging, and finishes the
    stream so that spdystream can close."""
    got: dict[str, Any] = {}
    args = ("-bytes", str(BULK), "-chunk", str(chunk), "-timeout", "60s")
    with trio.fail_after(TIMEOUT):
        if go_role == "client":
            async with trio.open_nursery() as nursery:
                port = await start_server(nursery, lambda session: consume(session, got))
                async with spdypeer.run("producer", "-connect", f"127.0.0.1:{port}",
                                        *args) as go:
                    result = await go.read_event("done")
                    await go.wait()
                nursery.cancel_scope.cancel()
        else:
            async with spdypeer.run("producer", "-listen", "127.0.0.1:0", *args) as go:
                port = await go.listening_port()
                async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                    await consume(session, got)
                result = await go.read_event("done")
                await go.wait()
    assert result.get("write_error", "") == ""
    assert result["close_error"] == "", result
    assert result["stream_close_error"] == ""
    assert got["bytes"] == result["sent"] == BULK
    assert got["sha256"] == result["sha256"]
    assert got["pings"] > 0
    assert got["headers"].get_all("x-producer") == ["go", "spdystream"]
    assert result["tap_error"] == ""


async def test_spdystream_tolerates_muxstream_flow_control_frames(spdypeer: Any) -> None:
    """muxstream announces windows (SETTINGS, WINDOW_UPDATE) and credits consumed
    data; spdystream parses and ignores both, and the transfer is unaffected."""
    got: dict[str, Any] = {}

    async def handler(session: muxstream.Session) -> None:
        await consume(session, got)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, handler, initial_window=65536)
            async with spdypeer.run("producer", "-connect", f"127.0.0.1:{port}",
                                    "-bytes", str(4 << 20), "-timeout", "60s") as go:
                result = await go.read_event("done")
                await go.wait()
            nursery.cancel_scope.cancel()
    frames = result["received_frames"]
    assert frames.get("SETTINGS", 0) >= 1, frames
    assert frames.get("WINDOW_UPDATE", 0) >= 1, frames
    assert result["tap_error"] == ""
    assert result["close_error"] == ""
    assert got["bytes"] == 4 << 20 and got["sha256"] == result["sha256"]
