"""Baseline: trio-websocket, 64 KiB binary messages.

The client sends binary messages, then the text message ``end``; the server answers
``end`` with the byte count it received (as text).  Both sides read the socket in
``params["receive_buffer"]`` chunks (default 256 KiB: trio-websocket's own default of
4 KiB is several times slower, see docs/performance.md, rule 6).
"""

from __future__ import annotations

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

from .._common import KiB, MiB, Params, Result, start_timed

MESSAGE = 64 * KiB
DEFAULT_RECEIVE_BUFFER = 256 * KiB


def _receive_buffer(params: Params) -> int | None:
    value = params.get("receive_buffer", DEFAULT_RECEIVE_BUFFER)
    return None if value is None else int(value)


async def server(params: Params, task_status: trio.TaskStatus[int]) -> None:
    """Serve WebSocket connections that count binary bytes until cancelled."""

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        count = 0
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    await ws.send_message(str(count))
                    count = 0
                else:
                    count += len(message)
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        srv = await nursery.start(_serve, handler, _receive_buffer(params))
        task_status.started(srv.port)


async def _serve(
    handler: object, receive_buffer: int | None, task_status: trio.TaskStatus[object]
) -> None:
    await serve_websocket(
        handler,  # type: ignore[arg-type]
        "127.0.0.1",
        0,
        None,
        max_message_size=4 * MiB,
        receive_buffer_size=receive_buffer,
        task_status=task_status,
    )


async def _transfer(ws: WebSocketConnection, size: int) -> None:
    payload = b"\x5a" * MESSAGE
    full, rest = divmod(size, MESSAGE)
    for _ in range(full):
        await ws.send_message(payload)
    if rest:
        await ws.send_message(payload[:rest])
    await ws.send_message("end")
    count = int(await ws.get_message())
    if count != size:
        raise RuntimeError(f"receiver counted {count} bytes, sent {size}")


async def bulk_client(port: int, params: Params) -> Result:
    """Warm up, then time ``size`` bytes of 64 KiB binary messages (client -> server)."""
    async with open_websocket(
        "127.0.0.1",
        port,
        "/",
        use_ssl=False,
        max_message_size=4 * MiB,
        receive_buffer_size=_receive_buffer(params),
    ) as ws:
        if params.get("warmup"):
            await _transfer(ws, params["warmup"])
        timer = await start_timed()
        await _transfer(ws, params["size"])
        result = timer.result(bytes=params["size"])
    return result


SCENARIOS = {"bulk": (server, bulk_client)}
