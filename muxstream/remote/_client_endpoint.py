"""Client side, connecting: where an endpoint is, and the HTTP upgrade to it.

Shared by every client of the service (exec, attach, cp, port-forward) and by
``muxstream.kube``. Transport negotiation follows kubectl v1.32: WebSocket
first, and on a refused upgrade (any non-101 answer) SPDY/3.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

import trio

from ..transport import (
    UpgradeRefused,
    open_tcp_or_tls_stream,
    wrap_upgrade_client,
    wrap_websocket_client,
)

#: How a client reaches the endpoint: WebSocket first then SPDY, or only one.
TransportChoice = Literal["auto", "websocket", "spdy"]
_KIND_NAMES = {"websocket": "WebSocket", "spdy": "SPDY/3.1"}
#: Each connection phase is told here at DEBUG (``muxstream -v`` shows them).
logger = logging.getLogger("muxstream.connect")


class RemoteError(Exception):
    """The endpoint refused the request (HTTP status and the Status message).

    ``reason`` is the Status document's reason (``"Forbidden"``, ``"NotFound"``...),
    empty when the answer was not a Status.
    """

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class RemoteEndpoint:
    """Where and how to connect: ``url`` is ``https://host:port`` or ``http://...``.

    ``ssl_context`` defaults to the system trust store for https URLs; pass one
    with ``load_cert_chain`` for client-certificate authentication.
    ``connect_timeout`` bounds each phase of connecting on its own: the TCP
    connect (``ConnectTimeout``), the TLS handshake (``TLSHandshakeTimeout``) and
    the HTTP upgrade (``HandshakeTimeout``), all from ``muxstream.transport``.
    """

    url: str
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    namespace: str = "default"
    transport: TransportChoice = "auto"
    connect_timeout: float = 30.0

    def path(self, pod: str, subresource: str) -> str:
        return (
            f"/api/v1/namespaces/{quote(self.namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}/{subresource}"
        )

    def headers(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _address(self) -> tuple[str, int, ssl.SSLContext | None, str]:
        """(host, port, TLS context or None for http, Host header value) of ``url``."""
        split = urlsplit(self.url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"bad endpoint URL {self.url!r}")
        port = split.port or (443 if split.scheme == "https" else 80)
        context = None
        if split.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
        return split.hostname, port, context, split.netloc

    async def connect(self) -> tuple[trio.abc.Stream, str]:
        """A fresh connection (TLS for https) and the Host header value."""
        host, port, context, netloc = self._address()
        stream = await open_tcp_or_tls_stream(
            host,
            port,
            ssl_context=context,
            https_compatible=True,  # API servers may close without close_notify
            connect_timeout=self.connect_timeout,
            handshake_timeout=self.connect_timeout,
        )
        return stream, netloc


def _refusal(refused: UpgradeRefused) -> RemoteError:
    message = refused.body.decode("utf-8", "replace").strip()
    reason = ""
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        document = json.loads(refused.body)
        reason = str(document.get("reason") or "")
        message = document["message"]
    return RemoteError(
        refused.status, message or f"HTTP {refused.status} {refused.reason}", reason
    )


async def upgrade(
    endpoint: RemoteEndpoint,
    target: str,
    *,
    websocket_protocols: Sequence[str],
    spdy_protocols: Sequence[str],
) -> tuple[Literal["websocket", "spdy"], str, trio.abc.Stream]:
    """Connect and upgrade, WebSocket first unless ``endpoint.transport`` says otherwise.

    Returns (transport, negotiated protocol, upgraded stream); for "websocket"
    the stream is a :class:`~muxstream.transport.WebSocketStream`. Raises
    :class:`RemoteError` when the endpoint refuses (the last refusal wins), and
    ``muxstream.transport.HandshakeError`` for a broken handshake.
    """
    order: list[Literal["websocket", "spdy"]] = (
        ["websocket", "spdy"] if endpoint.transport == "auto" else [endpoint.transport]
    )
    refusal: RemoteError | None = None
    for kind in order:
        stream, host = await endpoint.connect()
        offered = websocket_protocols if kind == "websocket" else spdy_protocols
        logger.debug("upgrade to %s, offering %s", _KIND_NAMES[kind], ", ".join(offered))
        try:
            if kind == "websocket":
                websocket = await wrap_websocket_client(
                    stream,
                    target,
                    host=host,
                    subprotocols=websocket_protocols,
                    headers=endpoint.headers(),
                    handshake_timeout=endpoint.connect_timeout,
                )
                logger.debug("upgraded to WebSocket, protocol %s", websocket.subprotocol)
                return kind, websocket.subprotocol or "", websocket
            upgraded, response = await wrap_upgrade_client(
                stream,
                target,
                host=host,
                method="POST",
                protocols=spdy_protocols,
                headers=endpoint.headers(),
                handshake_timeout=endpoint.connect_timeout,
            )
            logger.debug("upgraded to SPDY/3.1, protocol %s", response.protocol)
            return kind, response.protocol or "", upgraded
        except UpgradeRefused as refused:
            refusal = _refusal(refused)
            logger.debug("%s refused: HTTP %s %s", _KIND_NAMES[kind], refused.status,
                         refusal.message)
    assert refusal is not None
    raise refusal
