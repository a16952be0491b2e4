"""A muxstream remote server on loopback for client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from muxstream.remote import KubeApi, RemoteServerConfig, bound_port, serve_remote
from muxstream.remote._client import RemoteEndpoint

TOKEN = "client-test-token"


@asynccontextmanager
async def remote_server(transport: str = "auto", **config: Any) -> AsyncIterator[RemoteEndpoint]:
    """Serve on 127.0.0.1:0 (plain HTTP, token auth); yield an endpoint for it."""
    config.setdefault("token", TOKEN)
    config.setdefault("api", KubeApi({"demo": ["main"]}))
    server_config = RemoteServerConfig(**config)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_remote(server_config, 0, task_status=task_status)
        )
        yield RemoteEndpoint(
            f"http://127.0.0.1:{bound_port(listeners)}",
            token=TOKEN,
            transport=transport,  # type: ignore[arg-type]
        )
        nursery.cancel_scope.cancel()
