"""A muxstream remote server on loopback for client tests."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from muxstream.remote import KubeApi, RemoteServerConfig, bound_port, serve_remote
from muxstream.remote._client import RemoteEndpoint

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
