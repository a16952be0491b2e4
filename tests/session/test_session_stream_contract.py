"""Stream is a real trio.abc.HalfCloseableStream: trio's own conformance checks."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from muxstream import CLIENT, SERVER, Stream
from muxstream.testing import start_session

WINDOW = 4096


async def _stream_pair(
    nursery: trio.Nursery, link: tuple[trio.abc.Stream, trio.abc.Stream], **options: object
) -> tuple[Stream, Stream]:
    opts: dict[str, Any] = {"keepalive_interval": None, **options}
    client = start_session(nursery, link[0], role=CLIENT, **opts)
    server = start_session(nursery, link[1], role=SERVER, **opts)
    accepted: list[Stream] = []

    async def accept() -> None:
        accepted.append(await server.accept())

    async with trio.open_nursery() as inner:
        inner.start_soon(accept)
        opened = await client.open_stream({"purpose": "check"})
    return opened, accepted[0]


async def test_stream_passes_trio_half_closeable_checks(make_link) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def maker() -> tuple[Stream, Stream]:
                return await _stream_pair(nursery, await make_link())

            async def clogged_maker() -> tuple[Stream, Stream]:
                a, b = await _stream_pair(
                    nursery, await make_link(), initial_window=WINDOW, session_window=1 << 20
                )
                # Fill both windows: the next send_all (either way) blocks until
                # the other side reads.
                await a.send_all(b"x" * WINDOW)
                await b.send_all(b"x" * WINDOW)
                return a, b

            await trio.testing.check_half_closeable_stream(maker, clogged_maker)
            nursery.cancel_scope.cancel()
