"""Protocol errors: who is at fault, and what goes on the wire next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._constants import GoAwayStatus, RstStatus

if TYPE_CHECKING:
    from ._events import Event


class MuxstreamError(Exception):
    """Base class of muxstream's own errors, in every layer (re-exported as
    ``muxstream.MuxstreamError``): ``except MuxstreamError`` catches the
    protocol's errors too."""


class ProtocolError(MuxstreamError):
    """Base class of every error raised by :mod:`muxstream.protocol`."""


class LocalProtocolError(ProtocolError):
    """The local caller asked for something the protocol forbids.

    Nothing was queued for the wire; the connection is unchanged.
    """


class FlowControlError(LocalProtocolError):
    """The caller tried to send more DATA than the peer's window allows."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    The frame that should answer it has already been queued on the connection:

    * a stream error (``stream_id`` set, ``fatal`` false) queued RST_STREAM with
      ``rst_status``; the connection stays usable. ``events`` holds the events
      decoded before the bad frame (the caller must still process them); call
      ``receive_data(b"")`` to go on parsing the bytes already fed.
    * a session error (``fatal`` true) queued GOAWAY with ``goaway_status``; the
      connection accepts nothing more. Flush ``data_to_send()`` and close.
    """

    def __init__(
        self,
        message: str,
        *,
        stream_id: int | None = None,
        rst_status: RstStatus | None = None,
        goaway_status: GoAwayStatus | None = None,
    ) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.rst_status = rst_status
        self.goaway_status = goaway_status
        self.events: list[Event] = []

    @property
    def fatal(self) -> bool:
        """True if this error ends the whole session (GOAWAY), not one stream."""
        return self.goaway_status is not None

    @classmethod
    def session(
        cls, message: str, status: GoAwayStatus = GoAwayStatus.PROTOCOL_ERROR
    ) -> RemoteProtocolError:
        """A session error answered with GOAWAY(``status``)."""
        return cls(message, goaway_status=status)

    @classmethod
    def stream(cls, message: str, stream_id: int, status: RstStatus) -> RemoteProtocolError:
        """A stream error answered with RST_STREAM(``stream_id``, ``status``)."""
        return cls(message, stream_id=stream_id, rst_status=status)
