"""The exec/attach/port-forward server: HTTP routing, authentication, upgrades.

Threat model (see docs/kubernetes.md): this service runs commands for whoever
reaches it. So it listens on loopback unless told otherwise, requires a bearer
token (compared in constant time) or a verified TLS client certificate, and
answers 401/403 before any process starts or any upgrade happens. Commands run
without a shell (argv as given, no expansion); ``allowed_commands`` restricts
argv[0]; ``allowed_ports`` restricts port-forward targets. kubectl only sends
bearer tokens over TLS, so serving kubectl with a token means serving TLS.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import ssl
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import trio

from ._backend import ExecBackend, LocalBackend
from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    PROTOCOL_VERSION_HEADER,
    SUPPORTED_STREAM_PROTOCOLS,
    negotiate,
    split_header_values,
)
from ._exec_ws import serve_exec_websocket
from ._http import HttpError, HttpRequest, HttpServerConnection
from ._kubeapi import ApiResponse, KubeApi, SubresourceRequest, status_body
from ._ws import WebSocket

logger = logging.getLogger("muxstream.remote")

#: Seconds a client has to send its request head (slowloris bound).
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: Seconds to wait for the expected SPDY streams after the upgrade (kubelet's
#: default stream creation timeout is 30 s).
DEFAULT_STREAM_CREATION_TIMEOUT = 30.0
#: Seconds a graceful close may take.
DEFAULT_CLOSE_TIMEOUT = 10.0
WEBSOCKET_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


@dataclass
class RemoteServerConfig:
    """What the server serves and whom it trusts.

    Args:
      token: the bearer token clients must present (``Authorization: Bearer``).
      client_certs: accept a verified TLS client certificate as authentication
        (the ssl_context must request and verify client certificates).
      insecure_no_auth: serve without authentication (local experiments only).
      allowed_commands: if set, exec is refused (403) unless argv[0] is listed.
      allowed_ports: if set, port-forward is refused unless the port is listed.
      backend: runs the commands; a :class:`LocalBackend` by default.
      api: the fake Kubernetes API (pods and containers kubectl may address).
      forward_host: where port-forward connects (the "pod" network).
    """

    token: str | None = None
    client_certs: bool = False
    insecure_no_auth: bool = False
    allowed_commands: Collection[str] | None = None
    allowed_ports: Collection[int] | None = None
    backend: ExecBackend | None = None
    api: KubeApi = field(default_factory=KubeApi)
    forward_host: str = "127.0.0.1"
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    stream_creation_timeout: float = DEFAULT_STREAM_CREATION_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    session_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.token or self.client_certs or self.insecure_no_auth):
            raise ValueError(
                "refusing to serve commands without authentication: pass token=..., "
                "client_certs=True (with TLS), or insecure_no_auth=True"
            )


def _authorized(config: RemoteServerConfig, request: HttpRequest, stream: trio.abc.Stream) -> bool:
    if config.insecure_no_auth:
        return True
    if config.token:
        header = request.header("authorization") or ""
        scheme, _, presented = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), config.token.encode()
        ):
            return True
    if config.client_certs and isinstance(stream, trio.SSLStream):
        with contextlib.suppress(Exception):
            if stream.getpeercert():
                return True
    return False


class RemoteServer:
    """Serves one configuration; :meth:`handle_connection` takes any accepted stream."""

    def __init__(self, config: RemoteServerConfig, backend: ExecBackend) -> None:
        self.config = config
        self.backend = backend

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve HTTP requests on ``stream`` until it closes or is upgraded."""
        http = HttpServerConnection(stream)
        try:
            while True:
                with trio.fail_after(self.config.handshake_timeout):
                    request = await http.next_request()
                if request is None:
                    break
                upgraded = await self._dispatch(http, request)
                if upgraded or http.must_close:
                    break
        except (HttpError, trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError) as exc:
            logger.debug("connection dropped: %r", exc)
        except Exception:  # one bad connection must not take the server down
            logger.exception("error serving a connection")
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _refuse(self, http: HttpServerConnection, response: ApiResponse) -> bool:
        await http.respond(response.status, response.body, response.content_type)
        return False

    async def _dispatch(self, http: HttpServerConnection, request: HttpRequest) -> bool:
        """Answer one request; True if the connection was upgraded (and is done)."""
        if not _authorized(self.config, request, http.stream):
            logger.info("refused unauthenticated %s %s", request.method, request.target)
            return await self._refuse(
                http, ApiResponse(401, status_body(401, "Unauthorized", "Unauthorized"))
            )
        target = self.config.api.parse_subresource(request.target)
        if target is None:
            response = self.config.api.respond(request.method, request.target)
            await http.respond(response.status, response.body, response.content_type)
            return False
        if isinstance(target, ApiResponse):
            return await self._refuse(http, target)
        refusal = self._policy_refusal(target)
        if refusal is not None:
            return await self._refuse(http, refusal)
        if request.wants_upgrade("websocket"):
            return await self._websocket(http, request, target)
        if request.wants_upgrade("spdy/3.1"):
            return await self._spdy(http, request, target)
        return await self._refuse(
            http,
            ApiResponse(
                400, status_body(400, "BadRequest", "Upgrade request required"), "application/json"
            ),
        )

    def _policy_refusal(self, target: SubresourceRequest) -> ApiResponse | None:
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

    async def _websocket(
        self, http: HttpServerConnection, request: HttpRequest, target: SubresourceRequest
    ) -> bool:
        from wsproto.utilities import generate_accept_token

        key = request.header("sec-websocket-key")
        offered = split_header_values(request.header_values("sec-websocket-protocol"))
        supported = (
            (PORT_FORWARD_TUNNEL_PROTOCOL,)
            if target.kind == "portforward"
            else WEBSOCKET_EXEC_PROTOCOLS
        )
        protocol = negotiate(offered, supported)
        if key is None or request.header("sec-websocket-version") != "13" or protocol is None:
            message = (
                f"websocket: unsupported protocols {offered}; server accepts {list(supported)}"
            )
            return await self._refuse(
                http, ApiResponse(400, status_body(400, "BadRequest", message))
            )
        stream = await http.switch_protocols(
            [
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", generate_accept_token(key.encode()).decode()),
                ("sec-websocket-protocol", protocol),
            ]
        )
        logger.info("%s %s: WebSocket %s", target.kind, target.pod, protocol)
        websocket = WebSocket(stream, client=False)
        if target.kind == "portforward":
            from ._portforward import serve_port_forward_tunnel

            await serve_port_forward_tunnel(websocket, self.config, target.pod)
        else:
            await serve_exec_websocket(
                websocket,
                protocol,
                target.exec_request(),
                self.backend,
                close_timeout=self.config.close_timeout,
            )
        return True

    async def _spdy(
        self, http: HttpServerConnection, request: HttpRequest, target: SubresourceRequest
    ) -> bool:
        offered = split_header_values(request.header_values(PROTOCOL_VERSION_HEADER))
        supported = (
            (PORT_FORWARD_PROTOCOL,) if target.kind == "portforward" else SUPPORTED_STREAM_PROTOCOLS
        )
        protocol = negotiate(offered, supported)
        if protocol is None:
            # apimachinery httpstream.Handshake answers 403 and lists what it accepts.
            message = (
                f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                f"server accepts {list(supported)}"
            )
            await http.respond(
                403,
                status_body(403, "Forbidden", message),
                headers=[("x-accepted-stream-protocol-versions", ", ".join(supported))],
            )
            return False
        stream = await http.switch_protocols(
            [
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                (PROTOCOL_VERSION_HEADER, protocol),
            ]
        )
        logger.info("%s %s: SPDY %s", target.kind, target.pod, protocol)
        if target.kind == "portforward":
            from ._portforward import serve_port_forward_spdy

            await serve_port_forward_spdy(stream, self.config, target.pod)
        else:
            from ._exec_spdy import serve_exec_spdy

            await serve_exec_spdy(
                stream, protocol, target.exec_request(), self.backend, self.config
            )
        return True


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
    the listeners (use port 0 and read the bound port from them). With
    ``ssl_context``, every connection is TLS. The default backend is a
    :class:`LocalBackend` living as long as this call.
    """
    if config.client_certs and (ssl_context is None or ssl_context.verify_mode == ssl.CERT_NONE):
        raise ValueError("client_certs=True needs an ssl_context that requests client certificates")
    async with contextlib.AsyncExitStack() as stack:
        backend = config.backend
        if backend is None:
            backend = await stack.enter_async_context(LocalBackend())
        server = RemoteServer(config, backend)
        listeners = await trio.open_tcp_listeners(port, host=host)
        if ssl_context is not None:
            wrapped: list[Any] = [
                trio.SSLListener(listener, ssl_context, https_compatible=True)
                for listener in listeners
            ]
        else:
            wrapped = list(listeners)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, server.handle_connection, wrapped)
            task_status.started(listeners)


def bound_port(listeners: list[trio.SocketListener]) -> int:
    """The TCP port the first listener is bound to."""
    port: int = listeners[0].socket.getsockname()[1]
    return port
