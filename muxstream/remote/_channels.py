"""Protocol names and the WebSocket channel codec (sans-IO).

Theory of operation: over WebSocket, remotecommand multiplexes by prefixing
every binary message with one channel byte (apimachinery
util/httpstream/wsstream/conn.go, client-go tools/remotecommand/websocket.go):
0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. Version 5 adds one control
message, ``[255, channel]``, meaning "the sender will write nothing more on
this channel" (a half-close; the client uses it for stdin EOF). The
``base64.channel.k8s.io`` text variant is not supported: kubectl does not use it.

Over SPDY the same roles are separate streams typed by the ``streamtype``
header, and the version travels in ``X-Stream-Protocol-Version``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: remotecommand protocol versions, newest first (apimachinery util/remotecommand/constants.go).
STREAM_PROTOCOL_V5 = "v5.channel.k8s.io"
STREAM_PROTOCOL_V4 = "v4.channel.k8s.io"
STREAM_PROTOCOL_V3 = "v3.channel.k8s.io"
STREAM_PROTOCOL_V2 = "v2.channel.k8s.io"
STREAM_PROTOCOL_V1 = "channel.k8s.io"
#: The versions this package serves and speaks (v1 has different stream semantics).
SUPPORTED_STREAM_PROTOCOLS = (
    STREAM_PROTOCOL_V5,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
)
PROTOCOL_VERSIONS = {
    STREAM_PROTOCOL_V5: 5,
    STREAM_PROTOCOL_V4: 4,
    STREAM_PROTOCOL_V3: 3,
    STREAM_PROTOCOL_V2: 2,
}
#: Port-forward over SPDY, and over WebSocket as SPDY tunnelled in binary messages
#: (apimachinery util/portforward/constants.go).
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
WEBSOCKET_SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
PORT_FORWARD_TUNNEL_PROTOCOL = WEBSOCKET_SPDY_TUNNEL_PREFIX + PORT_FORWARD_PROTOCOL

#: SPDY stream headers (k8s.io/api/core/v1/types.go); names are lower case on the wire.
STREAM_TYPE_HEADER = "streamtype"
PORT_HEADER = "port"
REQUEST_ID_HEADER = "requestid"
PROTOCOL_VERSION_HEADER = "x-stream-protocol-version"


class StreamType(enum.StrEnum):
    """Values of the ``streamtype`` header."""

    ERROR = "error"
    STDIN = "stdin"
    STDOUT = "stdout"
    STDERR = "stderr"
    RESIZE = "resize"
    DATA = "data"  # port-forward


class Channel(enum.IntEnum):
    """WebSocket channel numbers."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4
    CLOSE = 255  # v5 only: the next byte names the channel being closed


CHANNEL_OF_STREAM_TYPE = {
    StreamType.STDIN: Channel.STDIN,
    StreamType.STDOUT: Channel.STDOUT,
    StreamType.STDERR: Channel.STDERR,
    StreamType.ERROR: Channel.ERROR,
    StreamType.RESIZE: Channel.RESIZE,
}


@dataclass(frozen=True, slots=True)
class ChannelData:
    """A message carrying ``data`` for ``channel``."""

    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """A v5 close signal: the sender is done writing ``channel``."""

    channel: int


def encode_data(channel: int, data: bytes | bytearray | memoryview) -> bytes:
    """One binary message carrying ``data`` on ``channel``."""
    if not 0 <= channel < Channel.CLOSE:
        raise ValueError(f"bad channel {channel}")
    return bytes((channel,)) + bytes(data)


def encode_close(channel: int) -> bytes:
    """The v5 close signal for ``channel``."""
    if not 0 <= channel < Channel.CLOSE:
        raise ValueError(f"bad channel {channel}")
    return bytes((Channel.CLOSE, channel))


def decode_message(
    message: bytes | bytearray | memoryview, *, version: int = 5
) -> ChannelData | ChannelClosed | None:
    """Decode one binary message.

    Returns None for an empty message (wsstream skips those). The close signal is
    only recognised when ``version >= 5``; before that channel 255 is data for an
    unknown channel, which the caller should discard. Raises ``ValueError`` for a
    malformed close signal.
    """
    view = memoryview(message)
    if not view:
        return None
    channel = view[0]
    if channel == Channel.CLOSE and version >= 5:
        if len(view) != 2:
            raise ValueError("malformed close signal")
        return ChannelClosed(view[1])
    return ChannelData(channel, bytes(view[1:]))


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first of the client's ``offered`` protocols that we support.

    The client's order wins, as in apimachinery util/httpstream/httpstream.go
    ``negotiateProtocol``. Returns None when nothing matches.
    """
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


def split_header_values(values: list[str]) -> list[str]:
    """Flatten repeated and comma-separated header values (``a, b`` and ``a``/``b``)."""
    result: list[str] = []
    for value in values:
        result.extend(part.strip() for part in value.split(",") if part.strip())
    return result
