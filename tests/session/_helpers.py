"""Helpers shared by the session tests."""

from __future__ import annotations

import trio
import trio.testing

from muxstream import CLIENT, Session
from muxstream.protocol import Connection, DataFrame, Role
from muxstream.testing import RawPeer, start_session

NO_KEEPALIVE = {"keepalive_interval": None}


def start_client(nursery: trio.Nursery, **options: object) -> tuple[Session, trio.abc.Stream]:
    """A client session over a memory stream, started; and the far end's transport."""
    a, b = trio.testing.memory_stream_pair()
    return start_session(nursery, a, role=CLIENT, **{**NO_KEEPALIVE, **options}), b


def raw_server(transport: trio.abc.Stream, **options: int) -> RawPeer:
    """The far end as a hand-driven server :class:`~muxstream.protocol.Connection`."""
    return RawPeer(transport, connection=Connection(Role.SERVER, **options))  # type: ignore[arg-type]


def data_frames(peer: RawPeer) -> list[DataFrame]:
    """The DATA frames ``peer`` has read, in order."""
    return [f for f in peer.frames if isinstance(f, DataFrame)]


async def echo_each_stream(server: Session, *, reverse: bool = False) -> None:
    """Answer every stream ``server`` accepts with what it received (reversed if
    asked), data and FIN in one frame, once the peer's FIN is in."""
    async for stream in server:
        data = await stream.receive_all()
        assert stream.eof_received
        await stream.send_all(data[::-1] if reverse else data, eof=True)
        await stream.aclose()
