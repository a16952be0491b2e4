"""The exec/attach/port-forward server: HTTP routing, authentication, upgrades.

Threat model (see docs/kubernetes.md and docs/reliability.md): this service
runs commands for whoever reaches it. So it listens on loopback unless told
otherwise, refuses to listen beyond loopback without TLS (unless
``insecure_no_tls``) or without authentication (always), requires a bearer token
(SHA-256 digests compared in constant time, ``_auth``) or a verified TLS client
certificate, and answers 401/403/400 before any process starts or any upgrade
happens. Commands run without a shell (argv as given, no expansion);
``allowed_commands`` restricts argv[0]; ``allowed_ports`` restricts
port-forward targets. kubectl only sends bearer tokens over TLS, so serving
kubectl with a token means serving TLS.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import trio

from .._options import DEFAULT_CLOSE_TIMEOUT
from ..transport import HandshakeError, HTTPRequest, handle_http_connection, serve_http
from ._auth import bearer_token_matches, exposure_problem, validate_token
from ._backend import ExecBackend, LocalBackend
from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    SUPPORTED_STREAM_PROTOCOLS,
)
from ._exec_ws import serve_exec_websocket
from ._kubeapi import ApiResponse, KubeApi, SubresourceRequest, status_body

logger = logging.getLogger("muxstream.remote")

#: Seconds a client has to send its request head to this service (slowloris
#: bound); not transport.DEFAULT_HANDSHAKE_TIMEOUT, the 10 s of the HTTP handshakes.
DEFAULT_REQUEST_HEAD_TIMEOUT = 30.0
#: Seconds to wait for the expected SPDY streams after the upgrade (kubelet's
#: default stream creation timeout is 30 s).
DEFAULT_STREAM_CREATION_TIMEOUT = 30.0
WEBSOCKET_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


@dataclass
class RemoteServerConfig:
    """What the server serves and whom it trusts.

    Args:
      token: the bearer token clients must present (``Authorization: Bearer``).
      client_certs: authenticate by TLS client certificate: :func:`serve_remote`
        then requires an ssl_context with ``verify_mode = CERT_REQUIRED``, so a
        connection without a certificate signed by its CA never gets this far.
      insecure_no_auth: serve without authentication (local experiments only;
        :func:`serve_remote` refuses it beyond loopback).
      insecure_no_tls: let :func:`serve_remote` listen beyond loopback without
        TLS (tokens then cross the network in clear text: only behind something
        that encrypts, such as a TLS-terminating proxy or a VPN).
      allowed_commands: if set, exec is refused (403) unless argv[0] is listed.
      allowed_ports: if set, port-forward is refused unless the port is listed.
      backend: runs the commands; a :class:`LocalBackend` by default.
      api: the fake Kubernetes API (pods and containers kubectl may address).
      forward_host: where port-forward connects (the "pod" network).
    """

    token: str | None = None
    client_certs: bool = False
    insecure_no_auth: bool = False
    insecure_no_tls: bool = False
    allowed_commands: Collection[str] | None = None
    allowed_ports: Collection[int] | None = None
    backend: ExecBackend | None = None
    api: KubeApi = field(default_factory=KubeApi)
    forward_host: str = "127.0.0.1"
    handshake_timeout: float = DEFAULT_REQUEST_HEAD_TIMEOUT
    stream_creation_timeout: float = DEFAULT_STREAM_CREATION_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    session_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.token or self.client_certs or self.insecure_no_auth):
            raise ValueError(
                "refusing to serve commands without authentication: pass token=..., "
                "client_certs=True (with TLS), or insecure_no_auth=True"
            )
        if self.token is not None:
            validate_token(self.token)


def _authorized(config: RemoteServerConfig, request: HTTPRequest) -> bool:
    if config.insecure_no_auth or config.client_certs:
        # client_certs: the TLS handshake already verified the certificate.
        return True
    if config.token:
        values = request.headers.get_all("authorization")
        # Two Authorization lines are ambiguous (proxies disagree on which one
        # counts): refuse rather than pick one.
        return len(values) == 1 and bearer_token_matches(config.token, values[0])
    return False


async def _answer(request: HTTPRequest, response: ApiResponse, **headers: str) -> None:
    await request.respond(
        response.status,
        [("content-type", response.content_type), *headers.items()],
        response.body,
    )


class RemoteServer:
    """Serves one configuration as an HTTP application (``transport.HTTPApp``).

    Use :meth:`app` with ``muxstream.transport.serve_http`` (or any server that
    takes an ``HTTPApp``), or :meth:`handle_connection` with an accepted stream.
    """

    def __init__(self, config: RemoteServerConfig, backend: ExecBackend) -> None:
        self.config = config
        self.backend = backend

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve HTTP requests on ``stream`` until it closes (closes it on return)."""
        await handle_http_connection(
            stream, self.app, handshake_timeout=self.config.handshake_timeout
        )

    async def app(self, request: HTTPRequest) -> None:
        """Answer one request: 401/403/404 refusals, API documents, or an upgrade."""
        if not _authorized(self.config, request):
            logger.info("refused unauthenticated %s %s", request.method, request.target)
            await _answer(
                request, ApiResponse(401, status_body(401, "Unauthorized", "Unauthorized"))
            )
            return
        target = self.config.api.parse_subresource(request.target)
        if target is None:
            await _answer(request, self.config.api.respond(request.method, request.target))
            return
        if isinstance(target, ApiResponse):
            await _answer(request, target)
            return
        refusal = self._policy_refusal(target)
        if refusal is not None:
            await _answer(request, refusal)
            return
        if request.is_websocket:
            await self._websocket(request, target)
        elif request.is_upgrade and request.headers.has_token("upgrade", "spdy/3.1"):
            await self._spdy(request, target)
        else:
            message = "Upgrade request required"
            await _answer(request, ApiResponse(400, status_body(400, "BadRequest", message)))

    def _policy_refusal(self, target: SubresourceRequest) -> ApiResponse | None:
        """400 for a malformed query, 403 for what the policy forbids, else None."""
        if target.kind in ("exec", "attach"):
            problem = target.query_error()
            if problem is not None:
                logger.warning("refused %s: %s", target.kind, problem)
                return ApiResponse(400, status_body(400, "BadRequest", problem))
        if target.kind == "exec":
            command = target.query.get("command", [])
            if not command:
                return ApiResponse(
                    400, status_body(400, "BadRequest", "you must specify at least 1 command")
                )
            allowed = self.config.allowed_commands
            if allowed is not None and command[0] not in allowed:
                logger.warning("refused command %r", command)
                return ApiResponse(
                    403,
                    status_body(403, "Forbidden", f"command {command[0]!r} is not allowed"),
                )
        if target.kind == "portforward" and self.config.allowed_ports is not None:
            ports = target.ports()
            if any(p not in self.config.allowed_ports for p in ports):
                return ApiResponse(403, status_body(403, "Forbidden", "port is not allowed"))
        return None

    async def _websocket(self, request: HTTPRequest, target: SubresourceRequest) -> None:
        supported = (
            (PORT_FORWARD_TUNNEL_PROTOCOL,)
            if target.kind == "portforward"
            else WEBSOCKET_EXEC_PROTOCOLS
        )
        protocol = request.negotiate_subprotocol(supported)
        if protocol is None:
            offered = request.websocket_subprotocols
            message = (
                f"websocket: unsupported protocols {offered}; server accepts {list(supported)}"
            )
            await _answer(request, ApiResponse(400, status_body(400, "BadRequest", message)))
            return
        try:
            websocket = await request.accept_websocket(
                protocol, close_timeout=self.config.close_timeout
            )
        except HandshakeError:
            return  # already answered 400/426
        logger.info("%s %s: WebSocket %s", target.kind, target.pod, protocol)
        if target.kind == "portforward":
            from ._portforward import serve_port_forward_session

            await serve_port_forward_session(websocket, self.config, target.pod)
        else:
            await serve_exec_websocket(websocket, protocol, target.exec_request(), self.backend)

    async def _spdy(self, request: HTTPRequest, target: SubresourceRequest) -> None:
        supported = (
            (PORT_FORWARD_PROTOCOL,) if target.kind == "portforward" else SUPPORTED_STREAM_PROTOCOLS
        )
        protocol = request.negotiate_protocol(supported)
        if protocol is None:
            # apimachinery httpstream.Handshake answers 403 and lists what it accepts.
            offered = request.protocol_versions
            message = (
                f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                f"server accepts {list(supported)}"
            )
            await request.respond(
                403,
                [
                    ("content-type", "application/json"),
                    ("x-accepted-stream-protocol-versions", ", ".join(supported)),
                ],
                status_body(403, "Forbidden", message),
            )
            return
        stream = await request.accept_upgrade(protocol, upgrade="SPDY/3.1")
        logger.info("%s %s: SPDY %s", target.kind, target.pod, protocol)
        if target.kind == "portforward":
            from ._portforward import serve_port_forward_session

            await serve_port_forward_session(stream, self.config, target.pod)
        else:
            from ._exec_spdy import serve_exec_spdy

            await serve_exec_spdy(
                stream, protocol, target.exec_request(), self.backend, self.config
            )


async def serve_remote(
    config: RemoteServerConfig,
    port: int,
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve exec/attach/cp/port-forward and the kubectl API surface on ``host:port``.

    Runs until cancelled, like ``trio.serve_tcp``; ``task_status.started`` gets
    the listeners (use port 0 and read the bound port with :func:`bound_port`).
    With ``ssl_context``, every connection is TLS. The default backend is a
    :class:`LocalBackend` living as long as this call.

    Raises ValueError, before binding anything, for: ``insecure_no_auth`` on a
    host that is not loopback (127.0.0.0/8, ``::1``, ``localhost``; wildcards
    such as ``0.0.0.0``, ``::`` and ``""`` are not); no ``ssl_context`` on such
    a host unless ``config.insecure_no_tls``; ``client_certs`` without a context
    that requires client certificates.
    """
    problem = exposure_problem(
        host,
        tls=ssl_context is not None,
        insecure_no_auth=config.insecure_no_auth,
        insecure_no_tls=config.insecure_no_tls,
    )
    if problem == "auth":
        raise ValueError(
            f"refusing to serve without authentication on host={host!r}: insecure_no_auth "
            "is for loopback only (127.0.0.1, ::1, localhost)"
        )
    if problem == "tls":
        raise ValueError(
            f"refusing to serve without TLS on host={host!r} (beyond loopback): pass "
            "ssl_context=..., or set insecure_no_tls=True if something else encrypts "
            "the traffic (tokens would otherwise cross the network in clear text)"
        )
    if config.client_certs and (
        ssl_context is None or ssl_context.verify_mode != ssl.CERT_REQUIRED
    ):
        raise ValueError("client_certs=True needs an ssl_context with verify_mode=CERT_REQUIRED")
    async with contextlib.AsyncExitStack() as stack:
        backend = config.backend
        if backend is None:
            backend = await stack.enter_async_context(LocalBackend())
        server = RemoteServer(config, backend)
        await serve_http(
            server.app,
            port,
            host=host,
            ssl_context=ssl_context,
            handshake_timeout=config.handshake_timeout,
            task_status=task_status,
        )


def bound_port(listeners: list[trio.SocketListener]) -> int:
    """The TCP port the first listener is bound to."""
    port: int = listeners[0].socket.getsockname()[1]
    return port
