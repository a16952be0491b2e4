"""The client half of an HTTP/1.1 handshake with h11, shared by Upgrade and WebSocket.

h11 parses; this module only moves bytes, bounds time and size, and turns h11's
outcomes into our typed errors. The server half lives in ``_server.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import trio

from ._errors import HandshakeError, HandshakeNoAnswer, HandshakeTimeout, UpgradeRefused
from ._headers import HeadersLike, HTTPHeaders

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_HEADER_SIZE",
    "PROTOCOL_VERSION_HEADER",
    "UpgradeResponse",
    "client_handshake",
    "host_header",
]

DEFAULT_HANDSHAKE_TIMEOUT = 10.0  # seconds; bounds a slow (slowloris) peer on either side
DEFAULT_MAX_HEADER_SIZE = 16 * 1024  # bytes of request/response head; h11's own default
MAX_REFUSAL_BODY = 64 * 1024  # bytes of a refusal body we keep (Kubernetes sends a short text)
HANDSHAKE_RECEIVE_SIZE = 64 * 1024  # bytes per read during the handshake

#: Kubernetes' protocol-version negotiation header (``httpstream.HeaderProtocolVersion``).
PROTOCOL_VERSION_HEADER = "x-stream-protocol-version"


@dataclass(frozen=True, slots=True)
class UpgradeResponse:
    """The server's answer to an upgrade or WebSocket handshake (a ``101``).

    Attributes:
        status: always 101 here (refusals raise :class:`UpgradeRefused`).
        reason: the reason phrase, possibly empty.
        headers: the response headers.
    """

    status: int
    reason: str
    headers: HTTPHeaders

    @property
    def protocol(self) -> str | None:
        """The ``X-Stream-Protocol-Version`` the server chose, or None."""
        return self.headers.get(PROTOCOL_VERSION_HEADER)

    @property
    def subprotocol(self) -> str | None:
        """The ``Sec-WebSocket-Protocol`` the server chose, or None."""
        return self.headers.get("sec-websocket-protocol")


def host_header(host: str, port: int, tls: bool) -> str:
    """The ``Host`` header value for *host*:*port* (port omitted when default)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal, RFC 3986 section 3.2.2
    if port == (443 if tls else 80):
        return host
    return f"{host}:{port}"


def request_headers(
    host: str, required: list[tuple[str, str]], extra: HeadersLike
) -> list[tuple[str, str]]:
    """``Host`` plus *required* plus caller's *extra* (which may not repeat *required*)."""
    extra_headers = HTTPHeaders(extra)
    clash = {name for name, _ in required} & {name for name, _ in extra_headers}
    if clash:
        raise ValueError(f"headers {sorted(clash)} are set by the handshake itself")
    headers = [("host", host), *required]
    if extra_headers.get("host") is not None:
        headers = headers[1:]
    return [*headers, *extra_headers]


async def client_handshake(
    stream: trio.abc.Stream,
    request: h11.Request,
    *,
    timeout: float,
    max_header_size: int,
) -> tuple[UpgradeResponse, bytes]:
    """Send *request* (no body) and read the answer until a ``101``.

    Returns:
        The ``101`` response and the bytes that followed it (h11's trailing
        data: they belong to the upgraded protocol).

    Raises:
        UpgradeRefused: any final (non-1xx) response; its body is read up to
            ``MAX_REFUSAL_BODY`` bytes.
        HandshakeTimeout: nothing complete within *timeout* seconds.
        HandshakeNoAnswer: the connection ended or broke before any answer,
            or the answer was TLS (a TLS server talked to in plain text).
        HandshakeError: malformed or oversized response, or the connection
            ended or broke mid-handshake.
    The stream is left open in every case; the caller decides its fate.
    """
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_size)
    answered = False
    with trio.move_on_after(timeout):
        try:
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = bytes(await stream.receive_some(HANDSHAKE_RECEIVE_SIZE))
                    if not answered:
                        _check_first_answer(data)
                    answered = True
                    conn.receive_data(data)
                elif isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        response = UpgradeResponse(
                            101, event.reason.decode("latin-1"), HTTPHeaders(event.headers)
                        )
                        return response, conn.trailing_data[0]
                    # 100 Continue, 102 Processing...: keep waiting for the answer.
                elif isinstance(event, h11.Response):
                    raise await _refusal(stream, conn, event)
                elif isinstance(event, h11.ConnectionClosed):
                    raise HandshakeError("connection closed before the handshake response")
                else:  # pragma: no cover - h11 emits nothing else before a response
                    raise HandshakeError(f"unexpected HTTP event {event!r}")
        except h11.RemoteProtocolError as exc:
            raise HandshakeError(f"malformed HTTP response: {exc}") from exc
        except trio.BrokenResourceError as exc:
            if not answered:
                raise HandshakeNoAnswer(
                    "the connection broke before the server answered the handshake"
                ) from exc
            raise HandshakeError("connection broken during the handshake") from exc
    raise HandshakeTimeout(f"no handshake response within {timeout} s")


#: First bytes of a TLS record: content type (alert 21 or handshake 22), major version 3.
_TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")


def _check_first_answer(data: bytes) -> None:
    """Name the two answers that are not HTTP at all: none, and TLS."""
    if not data:
        raise HandshakeNoAnswer("the server closed the connection without answering")
    if data.startswith(_TLS_RECORD_STARTS):
        raise HandshakeNoAnswer("the server answered in TLS: it expects a TLS client", tls=True)


async def _refusal(
    stream: trio.abc.Stream, conn: h11.Connection, response: h11.Response
) -> UpgradeRefused:
    body = bytearray()
    while len(body) < MAX_REFUSAL_BODY:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(HANDSHAKE_RECEIVE_SIZE)))
        elif isinstance(event, h11.Data):
            body += event.data
        else:  # EndOfMessage, ConnectionClosed, PAUSED
            break
    return UpgradeRefused(
        response.status_code,
        response.reason.decode("latin-1"),
        HTTPHeaders(response.headers),
        bytes(body[:MAX_REFUSAL_BODY]),
    )
