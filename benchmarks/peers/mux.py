"""The subject: muxstream sessions (TCP, TLS or WebSocket), one connection per client.

The server accepts streams and acts on each stream's ``mode`` header:

* ``bulk``: read to EOF, reply with the byte count (8 bytes), close.
* ``echo``: read to EOF, send the bytes back, close.
* ``sink``: read and discard to EOF.      ``source``: send until the stream breaks.
* ``hold``: keep the stream object and do nothing (memory rows).
* ``hold_task``: same, plus one task per stream blocked in ``receive_some``.

The client side of each scenario is one measured repetition.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._common import (
    ACK_SIZE,
    CHUNK,
    PAYLOAD,
    TLS_SERVER_NAME,
    Params,
    Result,
    checkpoint,
    listener_port,
    percentile,
    rss_kib,
    split_sizes,
    start_timed,
    tls_contexts,
    trio_listen,
)

CHURN_MESSAGE = b"x" * 100
STALL_CHUNK = 16 * 1024  # small writes, so "bytes sent" is close to what the windows took


def unavailable_reason() -> str | None:
    """Why muxstream rows cannot run yet (None when they can)."""
    try:
        import muxstream
    except ImportError as exc:  # pragma: no cover - the package is installed editable
        return f"muxstream does not import: {exc}"
    missing = [n for n in ("open_session", "CLIENT", "SERVER") if not hasattr(muxstream, n)]
    if missing:
        return f"muxstream has no {', '.join(missing)} yet"
    return None


def websocket_unavailable_reason() -> str | None:
    """Why the muxstream-over-WebSocket row cannot run yet (None when it can)."""
    try:
        from muxstream import transport
    except ImportError as exc:
        return f"muxstream.transport does not import: {exc}"
    missing = [
        n for n in ("wrap_websocket_client", "handle_http_connection") if not hasattr(transport, n)
    ]
    if missing:
        return f"muxstream.transport has no {', '.join(missing)} yet"
    return None


def _session_options(params: Params) -> dict[str, Any]:
    """Session keyword options for both sides (``params["options"]``, set by run.py)."""
    return dict(params.get("options", {}))


def _tune_socket(sock: trio.SocketStream, params: Params) -> None:
    """Apply ``params["notsent_lowat"]`` (Linux TCP_NOTSENT_LOWAT, bytes), if given.

    An experiment knob: it caps the bytes queued unsent in the kernel, so control
    frames (PING replies) wait behind less bulk data.
    """
    lowat = params.get("notsent_lowat")
    if lowat:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, int(lowat))


TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux value


def _tls_stream_class() -> Any:
    """muxstream's own TLS stream (what open_tls_stream/wrap_tls_server return), or
    trio.SSLStream for a muxstream from before it (A/B runs against old commits)."""
    try:
        from muxstream.transport import TLSStream
    except ImportError:
        return trio.SSLStream
    return TLSStream


# --------------------------------------------------------------------------- server


async def _serve_stream(stream: Any, held: list[Any]) -> None:
    mode = stream.headers.get("mode", "bulk")
    try:
        if mode == "bulk":
            total = 0
            while data := await stream.receive_some(CHUNK):
                total += len(data)
            await stream.send_all(total.to_bytes(ACK_SIZE, "big"))
            await stream.aclose()
        elif mode == "echo":
            parts = []
            while data := await stream.receive_some(CHUNK):
                parts.append(data)
            await stream.send_all(b"".join(parts), eof=True)  # FIN on the DATA, as h2's
            await stream.aclose()
        elif mode == "sink":
            while await stream.receive_some(CHUNK):
                pass
            await stream.aclose()
        elif mode == "source":
            while True:
                await stream.send_all(PAYLOAD)
        elif mode == "hold_task":
            held.append(stream)
            await stream.receive_some(CHUNK)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _serve_session(session: Any) -> None:
    held: list[Any] = []  # "hold" streams live here until the session ends
    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await session.accept()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if stream.headers.get("mode") == "hold":
                held.append(stream)
            else:
                nursery.start_soon(_serve_stream, stream, held)
        nursery.cancel_scope.cancel()


async def server(params: Params, task_status: trio.TaskStatus[int]) -> None:
    """Accept sessions on a loopback port and serve their streams until cancelled."""
    import muxstream

    listener = await trio_listen()
    contexts = tls_contexts(params)
    options = _session_options(params)
    websocket = params.get("transport") == "websocket"

    async def run_session(transport: trio.abc.Stream) -> None:
        with trio.CancelScope() as scope:
            async with muxstream.open_session(
                transport, role=muxstream.SERVER, **options
            ) as session:
                await _serve_session(session)
                scope.cancel()  # the client left: no graceful wait on our side

    async def websocket_app(request: Any) -> None:
        await run_session(await request.accept_websocket())

    async def handler(sock: trio.SocketStream) -> None:
        _tune_socket(sock, params)
        transport: trio.abc.Stream = sock
        try:
            if contexts is not None:
                tls = _tls_stream_class()(sock, contexts[0], server_side=True)
                await tls.do_handshake()
                transport = tls
            if websocket:
                from muxstream.transport import handle_http_connection

                await handle_http_connection(transport, websocket_app)
            else:
                await run_session(transport)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(transport)

    async with trio.open_nursery() as nursery:
        task_status.started(listener_port(listener))
        await trio.serve_listeners(handler, [listener], handler_nursery=nursery)


# --------------------------------------------------------------------------- client


@asynccontextmanager
async def _session(port: int, params: Params, *, graceful: bool = True) -> AsyncIterator[Any]:
    """Connect and open a client session; on exit close it gracefully or hard (cancel)."""
    import muxstream

    sock = await trio.open_tcp_stream("127.0.0.1", port)
    _tune_socket(sock, params)
    transport: trio.abc.Stream = sock
    contexts = tls_contexts(params)
    if contexts is not None:
        tls = _tls_stream_class()(sock, contexts[1], server_hostname=TLS_SERVER_NAME)
        await tls.do_handshake()
        transport = tls
    if params.get("transport") == "websocket":
        from muxstream.transport import wrap_websocket_client

        transport = await wrap_websocket_client(transport, "/", host=f"127.0.0.1:{port}")
    with trio.CancelScope() as scope:
        async with muxstream.open_session(
            transport, role=muxstream.CLIENT, **_session_options(params)
        ) as session:
            yield session
            if not graceful:
                scope.cancel()
    await trio.aclose_forcefully(transport)


async def _transfer(session: Any, size: int) -> None:
    stream = await session.open_stream(headers={"mode": "bulk"})
    full, rest = divmod(size, CHUNK)
    for _ in range(full):
        await stream.send_all(PAYLOAD)
    if rest:
        await stream.send_all(PAYLOAD[:rest])
    await stream.send_eof()
    reply = b""
    while data := await stream.receive_some(ACK_SIZE):
        reply += data
    await stream.aclose()
    if int.from_bytes(reply, "big") != size:
        raise RuntimeError(f"receiver counted {reply!r} bytes, sent {size}")


async def _bulk(session: Any, size: int, streams: int) -> None:
    async with trio.open_nursery() as nursery:
        for n in split_sizes(size, streams):
            nursery.start_soon(_transfer, session, n)


async def bulk_client(port: int, params: Params) -> Result:
    """Time ``size`` bytes over ``streams`` concurrent streams (client -> server)."""
    streams = params.get("streams", 1)
    async with _session(port, params) as session:
        if params.get("warmup"):
            await _bulk(session, params["warmup"], streams)
        timer = await start_timed()
        await _bulk(session, params["size"], streams)
        result = timer.result(bytes=params["size"])
    return result


async def _echo(session: Any, wait_reply: bool = True) -> None:
    stream = await session.open_stream(headers={"mode": "echo"}, wait_reply=wait_reply)
    await stream.send_all(CHURN_MESSAGE, eof=True)  # as the h2 peer's end_stream=True
    reply = b""
    while data := await stream.receive_some(4096):
        reply += data
    await stream.aclose()
    if reply != CHURN_MESSAGE:
        raise RuntimeError(f"bad echo of {len(reply)} bytes")


async def _churn(session: Any, count: int, concurrency: int, wait_reply: bool = True) -> None:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _echo(session, wait_reply)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def churn_client(port: int, params: Params) -> Result:
    """Time ``count`` open/100 B/reply/close exchanges with ``concurrency`` in flight."""
    count, concurrency = params["count"], params["concurrency"]
    # wait_reply=False: send right behind SYN_STREAM, as h2 sends DATA behind HEADERS.
    wait_reply = params.get("wait_reply", True)
    async with _session(port, params) as session:
        await _churn(session, min(count, 50), concurrency, wait_reply)
        timer = await start_timed()
        await _churn(session, count, concurrency, wait_reply)
        result = timer.result(count=count)
    return result


async def _send_forever(stream: Any) -> None:
    while True:
        await stream.send_all(PAYLOAD)


async def _receive_forever(stream: Any) -> None:
    while await stream.receive_some(CHUNK):
        pass


async def ping_client(port: int, params: Params) -> Result:
    """Time ``count`` session pings; ``load`` = "send"/"recv" saturates one stream meanwhile."""
    load = params.get("load")
    rtts: list[float] = []
    async with _session(port, params, graceful=False) as session, trio.open_nursery() as nursery:
        if load == "send":
            stream = await session.open_stream(headers={"mode": "sink"})
            nursery.start_soon(_send_forever, stream)
        elif load == "recv":
            stream = await session.open_stream(headers={"mode": "source"})
            nursery.start_soon(_receive_forever, stream)
        if load:
            await trio.sleep(0.2)  # let the transfer reach steady state
        for _ in range(params.get("warmup_count", 20)):
            await session.ping()
        interval = params.get("interval", 0.0)
        for _ in range(params["count"]):
            # Wall-clock RTT as the application sees it; session.ping()'s own figure is
            # recorded too, as a cross-check.
            start = time.perf_counter()
            await session.ping()
            rtts.append(time.perf_counter() - start)
            if interval:
                await trio.sleep(interval)
        nursery.cancel_scope.cancel()
    return {"p50": percentile(rtts, 50), "p99": percentile(rtts, 99), "samples": len(rtts)}


async def _open_many(session: Any, n: int, mode: str) -> list[Any]:
    streams: list[Any] = []

    async def opener(count: int) -> None:
        for _ in range(count):
            streams.append(await session.open_stream(headers={"mode": mode}))

    async with trio.open_nursery() as nursery:
        for count in split_sizes(n, min(64, n)):
            nursery.start_soon(opener, count)
    return streams


async def idle_memory_client(port: int, params: Params) -> Result:
    """Open ``streams`` idle streams; the orchestrator measures the server before/after."""
    n = params["streams"]
    mode = "hold_task" if params.get("tasks") else "hold"
    async with _session(port, params, graceful=False) as session:
        await _echo(session)  # everything imported and warmed up on both sides
        gc.collect()
        before = rss_kib()
        await checkpoint("baseline")
        streams = await _open_many(session, n, mode)
        gc.collect()
        after = rss_kib()
        await checkpoint("holding")
        del streams
    return {"streams": n, "client_kib_per_stream": (after - before) / n}


async def idle_sessions_client(port: int, params: Params) -> Result:
    """Open ``sessions`` sessions (one stream each) and hold them; both sides' RSS growth.

    Everything is warmed up first on one extra session (imports, TLS, WebSocket
    code paths on both sides), which stays open through the measurement.
    """
    n = params["sessions"]
    release = trio.Event()

    async def hold(task_status: trio.TaskStatus[None]) -> None:
        async with _session(port, params, graceful=False) as session:
            stream = await session.open_stream(headers={"mode": "hold"})
            task_status.started()
            await release.wait()
            del stream

    async with _session(port, params, graceful=False) as warm, trio.open_nursery() as nursery:
        await _echo(warm)
        gc.collect()
        before = rss_kib()
        await checkpoint("baseline")
        for _ in range(n):
            await nursery.start(hold)
        await _echo(warm)  # the server has processed every stream by now
        gc.collect()
        after = rss_kib()
        await checkpoint("holding")
        release.set()
    return {"sessions": n, "client_kib_per_session": (after - before) / n}


async def stalled_memory_client(port: int, params: Params) -> Result:
    """Push on ``streams`` streams whose receiver never reads, until every one blocks."""
    import muxstream.protocol as mp

    n = params["streams"]
    options = _session_options(params)
    window = options.get("initial_window", mp.DEFAULT_INITIAL_WINDOW)
    session_window = options.get("session_window", mp.DEFAULT_SESSION_WINDOW)
    sent = 0
    chunk = PAYLOAD[:STALL_CHUNK]

    async def push(stream: Any) -> None:
        nonlocal sent
        while True:
            await stream.send_all(chunk)
            sent += len(chunk)

    async with _session(port, params, graceful=False) as session:
        streams = await _open_many(session, n, "hold")
        await checkpoint("baseline")
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(push, stream)
            last, still_since = -1, trio.current_time()
            while trio.current_time() - still_since < 0.5:
                await trio.sleep(0.05)
                if sent != last:
                    last, still_since = sent, trio.current_time()
            await checkpoint("stalled", bytes_sent=sent)
            nursery.cancel_scope.cancel()
    return {"streams": n, "window": window, "session_window": session_window, "bytes_sent": sent}


SCENARIOS = {
    "bulk": (server, bulk_client),
    "churn": (server, churn_client),
    "ping": (server, ping_client),
    "idle_memory": (server, idle_memory_client),
    "idle_sessions": (server, idle_sessions_client),
    "stalled_memory": (server, stalled_memory_client),
}
