"""muxstream: many bidirectional byte streams over one connection, on trio.

SPDY/3.1 framing as moby/spdystream and Kubernetes speak it. See docs/ for the
tutorial, the close path and the wire protocol.
"""

from ._errors import (
    ConnectionLost,
    KeepaliveTimeout,
    MuxstreamError,
    PingTimeout,
    SessionClosed,
    SessionGoneAway,
    StreamOpenTimeout,
    StreamResetError,
)
from ._options import (
    DEFAULT_ACCEPT_BACKLOG,
    DEFAULT_ACCEPT_BACKLOG_BYTES,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_WRITE_BUFFER,
    SessionKeywords,
    SessionOptions,
    SessionStatistics,
)
from ._session import CLIENT, SERVER, Session, open_session
from ._stream import Stream
from ._tcp import open_tcp_session, serve_tcp
from .protocol import (
    Headers,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Role,
    RstStatus,
)

__version__ = "0.1.0"

__all__ = [
    "CLIENT",
    "DEFAULT_ACCEPT_BACKLOG",
    "DEFAULT_ACCEPT_BACKLOG_BYTES",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_OPEN_TIMEOUT",
    "DEFAULT_PING_TIMEOUT",
    "DEFAULT_WRITE_BUFFER",
    "SERVER",
    "ConnectionLost",
    "Headers",
    "KeepaliveTimeout",
    "LocalProtocolError",
    "MuxstreamError",
    "PingTimeout",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "RstStatus",
    "Session",
    "SessionClosed",
    "SessionGoneAway",
    "SessionKeywords",
    "SessionOptions",
    "SessionStatistics",
    "Stream",
    "StreamOpenTimeout",
    "StreamResetError",
    "__version__",
    "open_session",
    "open_tcp_session",
    "serve_tcp",
]
