"""RawPeer: the far end of a session, driven frame by frame by a test."""

from __future__ import annotations

import trio

from ..protocol import (
    Connection,
    DataFrame,
    Event,
    Frame,
    FrameDecoder,
    HeaderCompressor,
    encode_frame,
)


class RawPeer:
    """The far end of a session, written and read frame by frame.

    What it sends is exactly what the test says: frames are encoded with this
    peer's own header compression context (:attr:`compressor`, one per
    direction as SPDY/3 requires), raw ``bytes`` go out as they are. What it
    reads is decoded with no protocol state checks (:attr:`decoder`), so a test
    can play a peer that breaks the protocol and still see every answer: every
    frame read is kept in :attr:`frames`, DATA frames whole (the pieces of one
    frame that arrives in several reads are joined).

    With a sans-IO ``connection``, the peer also feeds everything it reads to
    it (its events go to :attr:`events`) and :meth:`flush` writes what the
    connection queued: a well-behaved peer whose every step the test drives.
    Don't mix the two ways of sending frames with header blocks (SYN_STREAM,
    SYN_REPLY, HEADERS): the connection has its own compression context.

    Without a ``transport`` only the synchronous methods work: :meth:`send_to`
    and :meth:`receive_from` drive a :class:`~muxstream.protocol.Connection`
    directly, for sans-IO tests.
    """

    def __init__(
        self,
        transport: trio.abc.Stream | None = None,
        *,
        connection: Connection | None = None,
    ) -> None:
        self.transport = transport
        self.connection = connection
        self.compressor = HeaderCompressor()
        self.decoder = FrameDecoder()
        #: every frame read, in order
        self.frames: list[Frame] = []
        #: the events of :attr:`connection`, in order (tests may consume them)
        self.events: list[Event] = []
        self._pieces: list[DataFrame] = []  # a DATA frame still arriving
        self._unread: list[Frame] = []  # decoded, not yet returned by next_frame()

    # --- sans-IO ------------------------------------------------------------

    def encode(self, *frames: Frame | bytes) -> bytes:
        """The wire bytes of ``frames`` (``bytes`` are taken as they are)."""
        return b"".join(f if isinstance(f, bytes) else encode_frame(f, self.compressor)
                        for f in frames)

    def decode(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode ``data``: the frames it completes (also appended to :attr:`frames`)."""
        self.decoder.receive(data)
        out: list[Frame] = []
        while (frame := self.decoder.next_frame()) is not None:
            if isinstance(frame, DataFrame) and (frame.partial or self._pieces):
                self._pieces.append(frame)
                if frame.partial:
                    continue
                frame = DataFrame(frame.stream_id, b"".join(p.data for p in self._pieces),
                                  frame.flags)
                self._pieces.clear()
            out.append(frame)
        self.frames += out
        return out

    def send_to(self, conn: Connection, *frames: Frame | bytes) -> list[Event]:
        """Deliver ``frames`` to a sans-IO ``conn``; return its events."""
        return conn.receive_data(self.encode(*frames))

    def receive_from(self, conn: Connection) -> list[Frame]:
        """Decode everything ``conn`` has queued to send."""
        return self.decode(conn.data_to_send())

    # --- over the transport ---------------------------------------------------

    def _transport(self) -> trio.abc.Stream:
        if self.transport is None:
            raise RuntimeError("this RawPeer has no transport")
        return self.transport

    async def send(self, *frames: Frame | bytes) -> None:
        """Write ``frames`` (or raw ``bytes``) to the transport, in one write."""
        await self._transport().send_all(self.encode(*frames))

    async def read(self, max_bytes: int | None = None) -> list[Frame] | None:
        """Receive once and decode: the frames completed (possibly none).

        Returns None at end of stream, or when the transport broke (a reset
        connection) or was closed.
        """
        try:
            data = await self._transport().receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not data:
            return None
        frames = self.decode(data)
        if self.connection is not None:
            self.events += self.connection.receive_data(data)
        return frames

    async def read_events(self) -> list[Event]:
        """Receive once; return the :attr:`connection`'s new events ([] at the end)."""
        seen = len(self.events)
        await self.read()
        return self.events[seen:]

    async def read_until(self, kind: type[Event]) -> Event:
        """Read until the :attr:`connection` has an event of type ``kind``;
        remove it from :attr:`events` and return it.

        Raises:
            trio.BrokenResourceError: the transport ended first.
        """
        while True:
            for ev in self.events:
                if isinstance(ev, kind):
                    self.events.remove(ev)
                    return ev
            if await self.read() is None:
                raise trio.BrokenResourceError(f"the transport ended before a {kind.__name__}")

    async def next_frame(self) -> Frame | None:
        """The next frame read (DATA whole); None at the end of the transport."""
        while not self._unread:
            frames = await self.read(65536)
            if frames is None:
                return None
            self._unread += frames
        return self._unread.pop(0)

    async def frames_until_eof(self) -> list[Frame]:
        """Every further frame, until the end of the transport."""
        frames = []
        while (frame := await self.next_frame()) is not None:
            frames.append(frame)
        return frames

    async def flush(self) -> None:
        """Write whatever the :attr:`connection` has queued."""
        if self.connection is None:
            raise RuntimeError("this RawPeer has no connection")
        data = self.connection.data_to_send()
        if data:
            await self._transport().send_all(data)

    async def pump(self) -> None:
        """Read once, then write what the :attr:`connection` answers."""
        await self.read()
        await self.flush()
