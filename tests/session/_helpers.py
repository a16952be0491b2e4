"""Helpers shared by the session tests."""

from __future__ import annotations

import trio
import trio.testing

from muxstream import CLIENT, Session, SessionOptions
from muxstream.protocol import Connection, Role
from muxstream.protocol._frames import DataFrame, FrameDecoder

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


class RawPeer:
    """The far end driven by hand with the sans-IO connection; it also keeps
    every DATA frame it read, as decoded from the wire (``frames``)."""

    def __init__(self, transport: trio.abc.Stream, **options: int) -> None:
        self.transport = transport
        self.conn = Connection(Role.SERVER, **options)
        self.decoder = FrameDecoder()
        self.frames: list[DataFrame] = []
        self.events: list[object] = []

    async def read(self) -> None:
        """Read once: record the DATA frames, feed the connection."""
        data = await self.transport.receive_some()
        assert data, "the session closed the transport"
        self.decoder.receive(data)
        while (frame := self.decoder.next_frame()) is not None:
            if isinstance(frame, DataFrame):
                self.frames.append(frame)
        self.events += self.conn.receive_data(data)

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.transport.send_all(data)

    async def pump(self) -> None:
        """Read once and send whatever the connection answers."""
        await self.read()
        await self.flush()

    async def read_until(self, kind: type) -> object:
        while True:
            for ev in self.events:
                if isinstance(ev, kind):
                    self.events.remove(ev)
                    return ev
            await self.read()
