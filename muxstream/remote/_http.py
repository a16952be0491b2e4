"""The small HTTP/1.1 layer remote/ needs (h11): requests, responses, upgrades.

Server side, :class:`HttpServerConnection` reads requests one at a time on a
keep-alive connection, answers plain ones, and hands over the transport after
a 101 (with any bytes the client already sent behind the request). Client side,
:func:`http_request` sends one request and returns the response, or the
upgraded transport on 101.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import h11
import trio

#: Largest request or response head we accept (bytes); kubectl's are < 2 KiB.
MAX_HEAD_SIZE = 64 * 1024
#: Largest response body the client reads into memory (API documents are small).
MAX_BODY_SIZE = 16 * 1024 * 1024
RECEIVE_SIZE = 64 * 1024


class HttpError(Exception):
    """The peer spoke broken HTTP, or closed mid-message."""


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream that first returns ``prefix`` (bytes read past an HTTP head)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.transport = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return bytes(await self.transport.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.transport, trio.abc.HalfCloseableStream):
            await self.transport.send_eof()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self.transport.aclose()


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request head. Header names are lower case; repeated headers stay repeated."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def wants_upgrade(self, token: str) -> bool:
        """True if the request asks to upgrade to ``token`` (case-insensitive)."""
        connection = ",".join(self.header_values("connection")).lower()
        upgrade = ",".join(self.header_values("upgrade")).lower()
        tokens = [t.strip() for t in connection.split(",")]
        return "upgrade" in tokens and token.lower() in [u.strip() for u in upgrade.split(",")]


def _decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers)


def _encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class HttpServerConnection:
    """Server side of one HTTP/1.1 connection (keep-alive, upgrade)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(RECEIVE_SIZE)
            self._conn.receive_data(bytes(data))

    async def next_request(self) -> HttpRequest | None:
        """The next request head (its body is read and discarded), or None at EOF.

        Raises :class:`HttpError` for malformed input (after answering 400).
        """
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        try:
            event = await self._next_event()
            if isinstance(event, h11.ConnectionClosed):
                return None
            if not isinstance(event, h11.Request):
                raise HttpError(f"unexpected {event!r}")
            request = HttpRequest(
                event.method.decode("ascii"),
                event.target.decode("ascii"),
                _decode_headers(event.headers),
            )
            while True:
                body_event = await self._next_event()
                if isinstance(body_event, h11.EndOfMessage):
                    break
                if isinstance(body_event, h11.ConnectionClosed):
                    raise HttpError("connection closed inside a request")
                if body_event is h11.PAUSED:
                    break
        except h11.RemoteProtocolError as exc:
            if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self.respond(exc.error_status_hint, b"bad request\n", "text/plain")
            raise HttpError(str(exc)) from exc
        return request

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Send a complete response."""
        all_headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            *headers,
        ]
        data = self._conn.send(
            h11.Response(status_code=status, headers=_encode_headers(all_headers))
        )
        data += self._conn.send(h11.Data(data=body)) or b""
        data += self._conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    @property
    def must_close(self) -> bool:
        return self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE

    async def switch_protocols(self, headers: Sequence[tuple[str, str]]) -> PrefixedStream:
        """Answer 101 with ``headers`` and return the transport for the new protocol."""
        data = self._conn.send(
            h11.InformationalResponse(status_code=101, headers=_encode_headers(headers))
        )
        assert data is not None
        await self.stream.send_all(data)
        trailing, _closed = self._conn.trailing_data
        return PrefixedStream(self.stream, bytes(trailing))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response: on 101, ``stream`` is the upgraded transport, else ``body``."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    stream: PrefixedStream | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]


async def http_request(
    stream: trio.abc.Stream,
    method: str,
    target: str,
    host: str,
    headers: Sequence[tuple[str, str]] = (),
) -> HttpResponse:
    """Send one request (no body) and read the response.

    A 101 response returns the transport (``response.stream``) for the new
    protocol; any other status returns its body (at most ``MAX_BODY_SIZE``).
    Raises :class:`HttpError` on malformed responses or early EOF.
    """
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
    all_headers = [("host", host), *headers]
    if method == "POST":
        all_headers.append(("content-length", "0"))
    data = conn.send(
        h11.Request(method=method, target=target, headers=_encode_headers(all_headers))
    )
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    body = bytearray()
    response: h11.Response | h11.InformationalResponse | None = None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await stream.receive_some(RECEIVE_SIZE)
                conn.receive_data(bytes(chunk))
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    trailing, _closed = conn.trailing_data
                    return HttpResponse(
                        101,
                        _decode_headers(event.headers),
                        stream=PrefixedStream(stream, bytes(trailing)),
                    )
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_SIZE:
                    raise HttpError("response body too large")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpError("connection closed before the response")
    except h11.RemoteProtocolError as exc:
        raise HttpError(str(exc)) from exc
    assert response is not None
    return HttpResponse(response.status_code, _decode_headers(response.headers), bytes(body))


def websocket_key() -> str:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")
