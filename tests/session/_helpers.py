"""Helpers shared by the session tests."""

from __future__ import annotations

import trio
import trio.testing

from muxstream import CLIENT, Session, SessionOptions

NO_KEEPALIVE = {"keepalive_interval": None}


def start_client(nursery: trio.Nursery, **options: object) -> tuple[Session, trio.abc.Stream]:
    """A client session over a memory stream, started; and the far end's transport."""
    a, b = trio.testing.memory_stream_pair()
    session = Session(a, CLIENT, SessionOptions.from_kwargs({**NO_KEEPALIVE, **options}))
    session._start(nursery)
    return session, b


async def echo_each_stream(server: Session, *, reverse: bool = False) -> None:
    """Answer every stream ``server`` accepts with what it received (reversed if
    asked), data and FIN in one frame, once the peer's FIN is in."""
    async for stream in server:
        data = await stream.receive_all()
        assert stream.eof_received
        await stream.send_all(data[::-1] if reverse else data, eof=True)
        await stream.aclose()
