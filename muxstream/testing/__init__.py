"""Helpers that users' tests and ours share: session pairs over memory or TCP, a
session started in your own nursery, and a raw far end driven frame by frame.

See docs/testing.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

import trio
import trio.testing

from .._options import SessionKeywords, SessionOptions
from .._session import CLIENT, SERVER, Session, open_session, start_session
from ._raw_peer import RawPeer


@asynccontextmanager
async def open_session_pair(
    transport_pair: tuple[trio.abc.Stream, trio.abc.Stream] | None = None,
    options: SessionOptions | None = None,
    **keywords: Unpack[SessionKeywords],
) -> AsyncIterator[tuple[Session, Session]]:
    """A connected ``(client, server)`` pair of sessions.

    Over ``trio.testing.memory_stream_pair()`` unless ``transport_pair`` is given.
    Both close gracefully (concurrently) when the block ends. ``options`` and
    ``keywords`` (as for :func:`~muxstream.open_session`) apply to both.
    """
    settings = SessionOptions.resolve(options, keywords)
    a, b = transport_pair or trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def run_server(task_status: trio.TaskStatus[Session]) -> None:
            async with open_session(b, role=SERVER, options=settings) as server:
                task_status.started(server)
                await done.wait()

        server = await nursery.start(run_server)
        async with open_session(a, role=CLIENT, options=settings) as client:
            try:
                yield client, server
            finally:
                done.set()


async def open_tcp_transport_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of real TCP streams on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    try:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    finally:
        await listener.aclose()
    return client, server


__all__ = ["RawPeer", "open_session_pair", "open_tcp_transport_pair", "start_session"]
