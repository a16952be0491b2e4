"""Baseline: hyper-h2 (sans-IO HTTP/2) driven by trio, at its best.

Both ends announce the largest windows and frames HTTP/2 allows (2**31-1 byte stream
and connection windows, 16 MiB - 1 frames), so flow control never throttles and the
sender writes 256 KiB DATA frames like the other peers.  One reader task per connection
feeds ``receive_data`` and flushes ``data_to_send`` under a FIFO lock; the server answers
from the reader task itself (no task per stream), the cheapest way to drive h2.

Requests: ``POST /bulk`` (the reply body is the received byte count, 8 bytes) and
``POST /echo`` (the reply body is the request body).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio

from .._common import (
    ACK_SIZE,
    CHUNK,
    PAYLOAD,
    Params,
    Result,
    listener_port,
    split_sizes,
    start_timed,
    trio_listen,
)

MAX_WINDOW = 2**31 - 1
MAX_FRAME = 2**24 - 1
DEFAULT_WINDOW = 65535
CHURN_MESSAGE = b"x" * 100


def _request(path: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":path", path),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
    ]


class _StreamState:
    __slots__ = ("count", "data", "ended", "path")

    def __init__(self, path: bytes = b"") -> None:
        self.count = 0  # bytes received (a /bulk body is counted, not kept)
        self.data = bytearray()
        self.ended = trio.Event()
        self.path = path


class H2Peer:
    """One HTTP/2 connection over a trio stream, either side."""

    def __init__(self, sock: trio.abc.Stream, *, client_side: bool) -> None:
        self.sock = sock
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.client_side = client_side
        self.send_lock = trio.StrictFIFOLock()
        self.streams: dict[int, _StreamState] = {}
        self.window_changed = trio.Event()

    async def start(self) -> None:
        """Send the preface with large settings and a large connection window."""
        # The large values go in the very first SETTINGS frame rather than a later
        # update_settings(): h2 refreshes its frame parser's size limit only at the start
        # of receive_data(), so a SETTINGS ACK and a large DATA frame arriving in the same
        # read would fail with FrameTooLargeError.
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(
            client=self.client_side,
            initial_values={
                codes.INITIAL_WINDOW_SIZE: MAX_WINDOW,
                codes.MAX_FRAME_SIZE: MAX_FRAME,
                codes.MAX_CONCURRENT_STREAMS: 2**20,
            },
        )
        self.conn.max_inbound_frame_size = MAX_FRAME
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(MAX_WINDOW - DEFAULT_WINDOW)
        await self.flush()

    async def flush(self) -> None:
        """Write whatever h2 has queued (serialised: one writer at a time)."""
        async with self.send_lock:
            data = self.conn.data_to_send()
            if data:
                await self.sock.send_all(data)

    async def read_loop(self) -> None:
        """Feed received bytes to h2 and act on its events until EOF."""
        conn = self.conn
        while True:
            data = await self.sock.receive_some(CHUNK)
            if not data:
                return
            for event in conn.receive_data(data):
                self._on_event(event)
            await self.flush()

    def _on_event(self, event: Any) -> None:
        conn = self.conn
        if isinstance(event, h2.events.DataReceived):
            state = self.streams.get(event.stream_id)
            if state is not None:
                state.count += len(event.data)
                if state.path != b"/bulk":
                    state.data += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.RequestReceived):
            path = dict(event.headers).get(b":path", b"")
            self.streams[event.stream_id] = _StreamState(path)
        elif isinstance(event, h2.events.ResponseReceived):
            pass
        elif isinstance(event, h2.events.StreamEnded):
            state = self.streams.get(event.stream_id)
            if state is None:
                return
            if self.client_side:
                state.ended.set()
            else:
                del self.streams[event.stream_id]
                if state.path == b"/bulk":
                    body = state.count.to_bytes(ACK_SIZE, "big")
                else:
                    body = bytes(state.data)
                conn.send_headers(event.stream_id, [(b":status", b"200")])
                conn.send_data(event.stream_id, body, end_stream=True)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window_changed.set()
            self.window_changed = trio.Event()
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise trio.BrokenResourceError("h2 connection terminated")

    async def _wait_reply(self, stream_id: int, state: _StreamState) -> bytes:
        await self.flush()
        await state.ended.wait()
        del self.streams[stream_id]
        return bytes(state.data)

    async def post(self, path: bytes, size: int) -> bytes:
        """Send a request with a ``size``-byte body (respecting windows); return the reply body."""
        conn = self.conn
        stream_id = conn.get_next_available_stream_id()
        state = self.streams[stream_id] = _StreamState(b"client")
        conn.send_headers(stream_id, _request(path))
        remaining = size
        while remaining:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0:
                await self.window_changed.wait()
                continue
            n = min(CHUNK, remaining, room)
            conn.send_data(stream_id, PAYLOAD if n == CHUNK else PAYLOAD[:n])
            remaining -= n
            await self.flush()
        conn.end_stream(stream_id)
        return await self._wait_reply(stream_id, state)

    async def echo(self) -> bytes:
        """Open a stream, send 100 bytes with END_STREAM, return the echoed reply."""
        conn = self.conn
        stream_id = conn.get_next_available_stream_id()
        state = self.streams[stream_id] = _StreamState(b"client")
        conn.send_headers(stream_id, _request(b"/echo"))
        conn.send_data(stream_id, CHURN_MESSAGE, end_stream=True)
        return await self._wait_reply(stream_id, state)


async def server(params: Params, task_status: trio.TaskStatus[int]) -> None:
    """Serve HTTP/2 connections (``/bulk`` and ``/echo``) until cancelled."""
    listener = await trio_listen()

    async def handler(sock: trio.SocketStream) -> None:
        peer = H2Peer(sock, client_side=False)
        try:
            await peer.start()
            await peer.read_loop()
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(sock)

    async with trio.open_nursery() as nursery:
        task_status.started(listener_port(listener))
        await trio.serve_listeners(handler, [listener], handler_nursery=nursery)


async def _client(port: int, body: Any) -> Any:
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    peer = H2Peer(sock, client_side=True)
    async with sock, trio.open_nursery() as nursery:
        await peer.start()
        nursery.start_soon(peer.read_loop)
        result = await body(peer)
        nursery.cancel_scope.cancel()
    return result


async def _bulk(peer: H2Peer, size: int, streams: int) -> None:
    async def one(n: int) -> None:
        ack = int.from_bytes(await peer.post(b"/bulk", n), "big")
        if ack != n:
            raise RuntimeError(f"receiver counted {ack} bytes, sent {n}")

    async with trio.open_nursery() as nursery:
        for n in split_sizes(size, streams):
            nursery.start_soon(one, n)


async def bulk_client(port: int, params: Params) -> Result:
    """Time ``size`` bytes split over ``streams`` concurrent requests (client -> server)."""
    streams = params.get("streams", 1)

    async def body(peer: H2Peer) -> Result:
        if params.get("warmup"):
            await _bulk(peer, params["warmup"], streams)
        timer = await start_timed()
        await _bulk(peer, params["size"], streams)
        return timer.result(bytes=params["size"])

    result: Result = await _client(port, body)
    return result


async def churn_client(port: int, params: Params) -> Result:
    """Time ``count`` request/response exchanges of 100 bytes with ``concurrency`` in flight."""
    count, concurrency = params["count"], params["concurrency"]

    async def run(peer: H2Peer, total: int) -> None:
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                reply = await peer.echo()
                if reply != CHURN_MESSAGE:
                    raise RuntimeError("bad echo")

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)

    async def body(peer: H2Peer) -> Result:
        await run(peer, min(count, 50))
        timer = await start_timed()
        await run(peer, count)
        return timer.result(count=count)

    result: Result = await _client(port, body)
    return result


SCENARIOS = {
    "bulk": (server, bulk_client),
    "churn": (server, churn_client),
}
