"""Baseline: raw trio ``SocketStream`` (optionally wrapped in ``trio.SSLStream``).

Wire protocol on each TCP connection (shared with ``blocking.py``): the client's first
byte picks a mode.

* ``B`` bulk: repeated transfers, each ``size`` (8 bytes, big endian) then ``size``
  bytes; the server answers each with its received byte count (8 bytes).
* ``E`` echo: the server echoes whatever it receives (4-byte ping-pong RTT).
* ``S`` sink: the server reads and discards until EOF (load for the ping rows).
"""

from __future__ import annotations

import time

import trio

from .._common import (
    ACK_SIZE,
    CHUNK,
    PAYLOAD,
    TLS_SERVER_NAME,
    Params,
    Result,
    listener_port,
    percentile,
    receive_exactly,
    start_timed,
    tls_contexts,
    trio_listen,
)


async def _serve_connection(stream: trio.abc.Stream) -> None:
    mode = await stream.receive_some(1)
    if mode == b"B":
        while True:
            try:
                header = await receive_exactly(stream, 8)
            except EOFError:
                return
            remaining = int.from_bytes(header, "big")
            got = 0
            while got < remaining:
                data = await stream.receive_some(min(CHUNK, remaining - got))
                if not data:
                    return
                got += len(data)
            await stream.send_all(got.to_bytes(ACK_SIZE, "big"))
    elif mode == b"E":
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
    elif mode == b"S":
        while await stream.receive_some(CHUNK):
            pass


async def server(params: Params, task_status: trio.TaskStatus[int]) -> None:
    """Serve every connection with the mode protocol above until cancelled."""
    listener = await trio_listen()
    contexts = tls_contexts(params)

    async def handler(sock: trio.SocketStream) -> None:
        stream: trio.abc.Stream = sock
        if contexts is not None:
            stream = trio.SSLStream(sock, contexts[0], server_side=True)
        try:
            await _serve_connection(stream)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        task_status.started(listener_port(listener))
        await trio.serve_listeners(handler, [listener], handler_nursery=nursery)


async def _connect(port: int, params: Params, mode: bytes) -> trio.abc.Stream:
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    stream: trio.abc.Stream = sock
    contexts = tls_contexts(params)
    if contexts is not None:
        ssl_stream = trio.SSLStream(sock, contexts[1], server_hostname=TLS_SERVER_NAME)
        await ssl_stream.do_handshake()
        stream = ssl_stream
    await stream.send_all(mode)
    return stream


async def send_transfer(stream: trio.abc.Stream, size: int) -> None:
    """Send one length-prefixed bulk transfer and wait for the receiver's count."""
    await stream.send_all(size.to_bytes(8, "big"))
    full, rest = divmod(size, CHUNK)
    for _ in range(full):
        await stream.send_all(PAYLOAD)
    if rest:
        await stream.send_all(PAYLOAD[:rest])
    ack = int.from_bytes(await receive_exactly(stream, ACK_SIZE), "big")
    if ack != size:
        raise RuntimeError(f"receiver counted {ack} bytes, sent {size}")


async def bulk_client(port: int, params: Params) -> Result:
    """Warm up, then time one transfer of ``params["size"]`` bytes (client -> server)."""
    stream = await _connect(port, params, b"B")
    async with stream:
        if params.get("warmup"):
            await send_transfer(stream, params["warmup"])
        timer = await start_timed()
        await send_transfer(stream, params["size"])
        result = timer.result(bytes=params["size"])
    return result


async def _saturate(port: int, params: Params) -> None:
    stream = await _connect(port, params, b"S")
    async with stream:
        while True:
            await stream.send_all(PAYLOAD)


async def echo_client(port: int, params: Params) -> Result:
    """Time ``count`` 4-byte echo round trips; with ``load``, a second connection saturates."""
    rtts: list[float] = []
    async with trio.open_nursery() as nursery:
        if params.get("load"):
            nursery.start_soon(_saturate, port, params)
            await trio.sleep(0.2)  # let the load reach steady state
        stream = await _connect(port, params, b"E")
        async with stream:
            ping = b"ping"
            for _ in range(params.get("warmup_count", 20)):
                await stream.send_all(ping)
                await receive_exactly(stream, 4)
            interval = params.get("interval", 0.0)
            for _ in range(params["count"]):
                start = time.perf_counter()
                await stream.send_all(ping)
                await receive_exactly(stream, 4)
                rtts.append(time.perf_counter() - start)
                if interval:
                    await trio.sleep(interval)
        nursery.cancel_scope.cancel()
    return {"p50": percentile(rtts, 50), "p99": percentile(rtts, 99), "samples": len(rtts)}


SCENARIOS = {
    "bulk": (server, bulk_client),
    "ping": (server, echo_client),
}
