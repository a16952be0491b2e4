"""Numbers of the SPDY/3 wire format (draft-mbelshe-httpbis-spdy-00, section 2).

Names match the spec so that a reader can grep between the two.
"""

from __future__ import annotations

import enum

SPDY_VERSION = 3
#: The HTTP/1.1 Upgrade token Kubernetes and spdystream use for this framing.
UPGRADE_TOKEN = "SPDY/3.1"

#: Largest frame payload the 24-bit length field can express.
MAX_FRAME_LENGTH = (1 << 24) - 1
#: Largest stream id / window / delta: 31 bits.
MAX_STREAM_ID = (1 << 31) - 1
MAX_WINDOW = (1 << 31) - 1
#: SPDY/3 and 3.1 start every stream and the session at 64 KiB (2.6.8, 3.1 2.6.8).
SPDY_DEFAULT_WINDOW = 65536

CONTROL_BIT = 0x80000000
FRAME_HEADER_SIZE = 8


class FrameType(enum.IntEnum):
    """Control frame types. DATA frames have no type number on the wire."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class Flag(enum.IntFlag):
    """Frame flags. FIN is valid on DATA, SYN_STREAM, SYN_REPLY and HEADERS."""

    NONE = 0
    FIN = 0x01
    UNIDIRECTIONAL = 0x02
    #: Only on SETTINGS: forget persisted settings.
    CLEAR_SETTINGS = 0x01


class RstStatus(enum.IntEnum):
    """RST_STREAM status codes (2.6.3)."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    """GOAWAY status codes (2.6.6)."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingsId(enum.IntEnum):
    """SETTINGS ids (2.6.4). muxstream uses MAX_CONCURRENT_STREAMS and INITIAL_WINDOW_SIZE."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class SettingsFlag(enum.IntFlag):
    """Per-entry SETTINGS flags."""

    NONE = 0
    PERSIST_VALUE = 0x01
    PERSISTED = 0x02
