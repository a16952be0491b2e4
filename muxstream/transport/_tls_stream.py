"""TLS over any trio stream through ``ssl.MemoryBIO``, decrypting in bulk.

Theory of operation
-------------------
``trio.SSLStream`` returns one TLS record (at most 16 KiB) per ``receive_some``,
and each call is a pass through the scheduler: about 65,000 passes per GiB, on
top of a decode/dispatch/wake-up cycle in the layer above for each record.
:class:`TLSStream` reads the transport in large chunks (``receive_size``, 256
KiB by default) into the ``SSLObject``'s incoming BIO and answers one
``receive_some(max_bytes)`` with every complete record that fits in
``max_bytes``, joined: one pass and one piece for the reader above per
``max_bytes`` instead of per record. Records that do not fit stay encrypted in
the BIO for the next call, so nothing is decrypted twice or copied more than
once.

Sending: ``send_all`` encrypts everything into the outgoing BIO, then writes it
to the transport in one call. Whoever holds the send lock drains the outgoing
BIO completely before releasing it, and only the lock holder reads from the BIO,
so records reach the wire in the order OpenSSL made them -- including those a
receiver makes while reading (TLS 1.3 KeyUpdate answers, renegotiation): a
receiver sends those itself when no send is in progress, and otherwise leaves
them to the sender in progress, which never blocks a receiver on a peer that is
not reading.

Closing follows ``trio.SSLStream``: not half-closeable; the peer's
``close_notify`` is EOF (``b""``); a transport EOF without it is
``trio.BrokenResourceError`` (a truncation is never taken for the end), unless
``https_compatible``; ``aclose()`` sends our ``close_notify`` (unless
``https_compatible`` or a send is in progress) without waiting for the peer's,
then closes the transport. Any TLS error breaks the stream: later calls raise
``trio.BrokenResourceError``.
"""

from __future__ import annotations

import operator
import ssl
from collections.abc import Sequence
from typing import Any

import trio

__all__ = ["DEFAULT_TLS_RECEIVE_SIZE", "TLSStream"]

#: Bytes per transport read: sixteen full records, so a pass decrypts many.
DEFAULT_TLS_RECEIVE_SIZE = 256 * 1024
#: Plaintext ``receive_some()`` returns when called without ``max_bytes``.
_DEFAULT_MAX_BYTES = 256 * 1024
#: The largest TLS record's plaintext (RFC 8446 5.1): parts are gathered into these.
_RECORD = 16 * 1024

_FORWARDED = frozenset({
    "context", "server_side", "server_hostname", "session", "session_reused",
    "cipher", "shared_ciphers", "compression", "pending", "get_channel_binding",
    "version",
})


class TLSStream(trio.abc.Stream):
    """TLS on top of ``transport_stream``; a drop-in for ``trio.SSLStream``.

    Usually obtained from :func:`open_tls_stream` or :func:`wrap_tls_server`,
    which finish the handshake first. Construct it directly, then call
    :meth:`do_handshake`, to run TLS over a stream of your own.

    Args:
        transport_stream: the stream to encrypt (usually a ``trio.SocketStream``).
        ssl_context: client or server context (ALPN, client certificates and
            verification are configured on it, as for ``trio.SSLStream``).
        server_side: True to run the server side of the handshake.
        server_hostname: the name to verify and send as SNI (client side).
        https_compatible: as ``trio.SSLStream``'s: ``aclose()`` sends no
            ``close_notify``, and a transport EOF without one counts as EOF.
        receive_size: bytes per transport read.

    The ``ssl.SSLObject`` attributes ``trio.SSLStream`` forwards are forwarded
    too (``cipher()``, ``version()``, ``server_hostname``, ...).
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        https_compatible: bool = False,
        receive_size: int = DEFAULT_TLS_RECEIVE_SIZE,
    ) -> None:
        if receive_size < 1:
            raise ValueError("receive_size must be positive")
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = ssl_context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname,
        )
        self._https_compatible = https_compatible
        self._receive_size = receive_size
        self._handshake_done = False
        self._handshake_lock = trio.Lock()
        self._send_lock = trio.Lock()  # held by whoever writes to the transport
        self._receiving = False
        self._sending = False
        self._eof = False  # close_notify (or, https_compatible, a bare EOF) arrived
        self._broken: BaseException | None = None
        self._deferred: ssl.SSLError | None = None  # raised once earlier plaintext is out
        # A TLS 1.3 server's session tickets, made as its handshake ends: sent
        # with the first data (as trio does), since a client that is not reading
        # yet could otherwise block the handshake.
        self._delayed = b""
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        if name in _FORWARDED:
            return getattr(self._ssl, name)
        raise AttributeError(name)

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate, as ``ssl.SSLSocket.getpeercert``."""
        return self._ssl.getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        """The protocol ALPN agreed on, or None."""
        return self._ssl.selected_alpn_protocol()

    # -- state ---------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("the TLS stream is broken") from self._broken

    def _fail(self, exc: BaseException) -> trio.BrokenResourceError:
        """Mark the stream broken by ``exc``; return the error to raise."""
        if self._broken is None:
            self._broken = exc
        if isinstance(exc, trio.BrokenResourceError):
            return exc
        error = trio.BrokenResourceError(f"TLS failed: {exc}")
        error.__cause__ = exc
        return error

    # -- transport I/O --------------------------------------------------------

    async def _transport_send(self, data: bytes) -> None:
        try:
            await self.transport_stream.send_all(data)
        except trio.ClosedResourceError:
            if self._closed:
                raise
            raise self._fail(trio.BrokenResourceError("the transport was closed")) from None
        except BaseException as exc:
            # Cancelled or failed midway: a record may be cut short on the wire.
            self._fail(exc)
            raise

    async def _flush(self) -> None:
        """Send everything in the outgoing BIO (the caller holds the send lock)."""
        if self._delayed:
            delayed, self._delayed = self._delayed, b""
            await self._transport_send(delayed)
        while self._outgoing.pending:
            await self._transport_send(self._outgoing.read())

    async def _flush_if_idle(self) -> None:
        """Send what reading produced, unless a send in progress will (see the docs)."""
        if self._outgoing.pending and not self._send_lock.locked():
            async with self._send_lock:
                await self._flush()

    async def _read_transport(self) -> None:
        try:
            data = await self.transport_stream.receive_some(self._receive_size)
        except trio.ClosedResourceError:
            if self._closed:
                raise
            raise self._fail(trio.BrokenResourceError("the transport was closed")) from None
        except trio.BrokenResourceError as exc:
            raise self._fail(exc) from exc
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    # -- handshake ---------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake, if not done yet (idempotent; a checkpoint).

        Raises:
            trio.BrokenResourceError: the handshake failed (chained to the
                ``ssl.SSLError``, e.g. ``ssl.SSLCertVerificationError``), or
                the transport did.
        """
        self._check()
        if self._handshake_done:
            await trio.lowlevel.checkpoint()
            return
        async with self._handshake_lock:
            while not self._handshake_done:
                try:
                    self._ssl.do_handshake()
                    self._handshake_done = True
                    if self._ssl.server_side and self._ssl.version() == "TLSv1.3":
                        self._delayed = self._outgoing.read()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    # Send the alert that tells the peer why, if we can.
                    if self._outgoing.pending and not self._send_lock.locked():
                        async with self._send_lock:
                            try:
                                await self._flush()
                            except trio.BrokenResourceError:
                                pass
                    raise self._fail(exc) from exc
                if self._outgoing.pending:
                    async with self._send_lock:
                        while self._outgoing.pending:  # not the delayed tickets
                            await self._transport_send(self._outgoing.read())
                if not self._handshake_done:
                    await self._read_transport()
            self._check()

    # -- receiving ---------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return the next plaintext, at most ``max_bytes`` (default 256 KiB).

        Every complete record already read is decrypted and returned at once
        (up to ``max_bytes``); only when none is left does this read the
        transport. Returns ``b""`` after the peer's ``close_notify``.

        Raises:
            trio.BrokenResourceError: TLS or the transport failed, or the
                transport ended without ``close_notify`` (not
                ``https_compatible``).
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is receiving.
        """
        if max_bytes is None:
            max_bytes = _DEFAULT_MAX_BYTES
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving")
        self._check()
        if not self._handshake_done:
            await self.do_handshake()
            waited = True
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
        self._receiving = True
        try:
            while True:
                data = self._decrypt(max_bytes)
                if data is not None:
                    break
                if self._eof:
                    data = b""
                    break
                self._check()
                # What reading produced (a KeyUpdate answer...) goes out before
                # we wait: nothing is taken yet, so a cancellation loses nothing.
                await self._flush_if_idle()
                await self._read_transport()
                waited = True  # the transport read was a full checkpoint
        finally:
            self._receiving = False
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def _decrypt(self, max_bytes: int) -> bytes | None:
        """Every complete record up to ``max_bytes`` of plaintext, joined; None if none."""
        if self._eof:
            return None
        if self._deferred is not None:
            raise self._fail(self._deferred) from self._deferred
        parts: list[bytes] = []
        got = 0
        read = self._ssl.read
        try:
            while got < max_bytes:
                part = read(max_bytes - got)  # one record (or what fits of it)
                if not part:  # close_notify (read() may say so either way)
                    self._eof = True
                    break
                parts.append(part)
                got += len(part)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = True  # close_notify: after the records before it
        except ssl.SSLError as exc:
            if self._https_compatible and isinstance(exc, ssl.SSLEOFError):
                self._eof = True  # a bare EOF ends the stream like close_notify
            elif parts:
                self._deferred = exc  # hand out what came before it first
            else:
                raise self._fail(exc) from exc
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- sending -----------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of ``data``.

        Raises:
            trio.BrokenResourceError: TLS or the transport failed.
            trio.ClosedResourceError: this stream was closed.
            trio.BusyResourceError: another task is sending.
        If cancelled, some of ``data`` may have been sent and the stream is broken.
        """
        await self.send_all_parts((data,))

    async def send_all_parts(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Encrypt and send ``parts``, in order, as if joined: ``send_all`` of many
        buffers without joining them (a ``writev``).

        As few records as the bytes need, as for the joined bytes: whole
        records are encrypted where they lie, and only what is left over (small
        parts such as frame headers, a large part's head and tail) is gathered
        into records, so at most 16 KiB per part is copied. Raises as
        :meth:`send_all`.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            self._check()
            if not self._handshake_done:
                await self.do_handshake()
            if not any(len(part) for part in parts):
                await trio.lowlevel.checkpoint()
                self._check()
                return
            # Encrypt under the send lock, so that a receiver flushing its own
            # records (it does so only when the lock is free) never finds ours.
            # (Encrypting and sending in 64-256 KiB pieces instead measured no better.)
            async with self._send_lock:
                await self._flush()
                try:
                    self._encrypt(parts)
                except ssl.SSLError as exc:
                    raise self._fail(exc) from exc
                await self._flush()
        finally:
            self._sending = False

    def _encrypt(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Encrypt ``parts`` into the outgoing BIO (see :meth:`send_all_parts`):
        whole records straight from a part, what is left of one (a frame
        header, a payload's tail) gathered with what follows into a record."""
        gathered: list[bytes | bytearray | memoryview] = []
        size = 0
        for part in parts:
            view = memoryview(part).cast("B")
            if size:  # complete the record gathered so far from this part
                head = view[:_RECORD - size]
                gathered.append(head)
                size += len(head)
                view = view[len(head):]
                if size < _RECORD:
                    continue
                self._write(b"".join(gathered))
                gathered, size = [], 0
            whole = len(view) - len(view) % _RECORD
            if whole:
                self._write(view[:whole])
            if whole < len(view):
                gathered.append(view[whole:])
                size = len(view) - whole
        if gathered:
            self._write(gathered[0] if len(gathered) == 1 else b"".join(gathered))

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += self._ssl.write(view[written:])

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport can take more data (see ``trio.abc.SendStream``)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending")
        self._sending = True
        try:
            self._check()
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    # -- closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Send ``close_notify`` (see the module docs) and close the transport.

        Tasks blocked in this stream's methods get ``trio.ClosedResourceError``.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        notify = (self._handshake_done and self._broken is None and not self._https_compatible
                  and not self._send_lock.locked())
        self._closed = True
        try:
            if notify:
                try:
                    self._ssl.unwrap()  # writes close_notify; the peer's is not awaited
                except (ssl.SSLWantReadError, ssl.SSLError):
                    pass
                async with self._send_lock:
                    try:
                        await self._flush()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
        finally:
            await self.transport_stream.aclose()
