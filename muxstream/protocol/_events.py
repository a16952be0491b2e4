"""Events returned by :meth:`Connection.receive_data`: what the peer did, in past tense."""

from __future__ import annotations

from dataclasses import dataclass

from ._headers import Headers


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM). Answer with ``send_reply`` before DATA."""

    stream_id: int
    headers: Headers
    #: The peer sent FIN with its SYN_STREAM: it will send no data.
    ended: bool = False
    #: The peer declared the stream UNIDIRECTIONAL: we may not send on it.
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """The peer accepted a stream we opened (SYN_REPLY)."""

    stream_id: int
    headers: Headers
    ended: bool = False


@dataclass(frozen=True, slots=True)
class HeadersReceived:
    """Extra headers on an open stream (HEADERS).

    ``headers`` holds every HEADERS frame of the stream so far, merged (a name
    sent again keeps all its values); together they are bounded by
    ``max_header_block``, past which the stream is reset (PROTOCOL_ERROR).
    """

    stream_id: int
    headers: Headers
    ended: bool = False


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Payload bytes for a stream. Call ``acknowledge_received_data`` once consumed."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): no more data will come."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream was reset: by the peer (``remote``) or by us answering a peer's error."""

    stream_id: int
    status: int
    remote: bool = True


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged us; the echo is already queued."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The peer echoed one of our pings."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class SettingsReceived:
    """The peer sent SETTINGS (``{SettingsId: value}``)."""

    settings: dict[int, int]


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    """The peer opened its window: ``stream_id`` 0 is the whole session."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams; ours above ``last_good_stream_id`` were reset."""

    last_good_stream_id: int
    status: int


Event = (
    StreamOpened
    | ReplyReceived
    | HeadersReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | PingReceived
    | PingAcked
    | SettingsReceived
    | WindowUpdated
    | GoAwayReceived
)
