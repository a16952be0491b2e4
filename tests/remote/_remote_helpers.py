"""A muxstream remote server on loopback for client tests."""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from muxstream.remote import KubeApi, RemoteEndpoint, RemoteServerConfig, bound_port, serve_remote

TOKEN = "client-test-token"


@asynccontextmanager
async def remote_server(
    transport: str = "auto", ssl_context: ssl.SSLContext | None = None, **config: Any
) -> AsyncIterator[RemoteEndpoint]:
    """Serve on 127.0.0.1:0 (plain HTTP unless ``ssl_context``; token auth by
    default); yield an endpoint for it (without a client TLS context)."""
    config.setdefault("token", TOKEN)
    config.setdefault("api", KubeApi({"demo": ["main"]}))
    server_config = RemoteServerConfig(**config)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_remote(
                server_config, 0, ssl_context=ssl_context, task_status=task_status
            )
        )
        yield RemoteEndpoint(
            f"{'https' if ssl_context else 'http'}://127.0.0.1:{bound_port(listeners)}",
            token=TOKEN,
            transport=transport,  # type: ignore[arg-type]
        )
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def cutting_proxy(
    upstream_port: int, limit: float, *, downstream: bool, trigger: trio.Event | None = None
) -> AsyncIterator[tuple[int, trio.Event]]:
    """A TCP proxy that forwards ``limit`` bytes one way (server->client with
    ``downstream``), then resets both connections (SO_LINGER 0): a peer that
    dies mid-transfer. Setting ``trigger`` resets every connection open then.
    Yields (port, cut event)."""
    import socket
    import struct

    cut = trio.Event()

    def abort(*streams: trio.SocketStream) -> None:
        cut.set()
        for stream in streams:
            with contextlib.suppress(OSError):
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                stream.socket.close()

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, counted: bool) -> None:
        forwarded = 0
        try:
            while data := await src.receive_some(65536):
                if counted and forwarded + len(data) > limit:
                    abort(src, dst)
                    return
                await dst.send_all(data)
                forwarded += len(data)
            await dst.send_eof()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            abort(src, dst)

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
        async with trio.open_nursery() as nursery:
            if trigger is not None:

                async def watch(trigger: trio.Event) -> None:
                    await trigger.wait()
                    abort(client, upstream)

                nursery.start_soon(watch, trigger)
            async with trio.open_nursery() as pumps:
                pumps.start_soon(pump, client, upstream, not downstream)
                pumps.start_soon(pump, upstream, client, downstream)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1], cut
        nursery.cancel_scope.cancel()
