"""The exec/attach/port-forward server: HTTP routing, authentication, upgrades.

The router of the server side: each request is checked here (origin,
credentials, policy, limits) and an upgraded connection handed to its handler
(``_server_exec_spdy``, ``_server_exec_ws``, ``_server_portforward``), which
imports nothing from here (the configuration is ``_server_config``).

Threat model (see docs/kubernetes.md and docs/reliability.md): this service
runs commands for whoever reaches it. So it listens on loopback unless told
otherwise, refuses to listen beyond loopback without TLS (unless
``insecure_no_tls``) or without authentication (always), requires a bearer token
(SHA-256 digests compared in constant time, ``muxstream._auth``) or a verified TLS client
certificate, and answers 401/403/400 before any process starts or any upgrade
happens. Commands run without a shell (argv as given, no expansion);
``allowed_commands`` restricts argv[0] (``allow_copy`` adds the exact argv
shapes cp needs, ``_server_allow``); ``allowed_ports`` restricts
port-forward targets. kubectl only sends bearer tokens over TLS, so serving
kubectl with a token means serving TLS.
"""

from __future__ import annotations

import contextlib
import logging
import ssl

import trio

from .._auth import (
    bearer_token_matches,
    browser_refusal,
    exposure_problem,
    no_auth_warning,
    peer_host,
)
from ..transport import (
    HandshakeError,
    HTTPRequest,
    current_connection,
    current_peer,
    handle_http_connection,
    serve_http,
)
from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    SUPPORTED_STREAM_PROTOCOLS,
)
from ._server_allow import command_refusal
from ._server_backend import ExecBackend, LocalBackend
from ._server_config import RemoteServerConfig
from ._server_exec_spdy import serve_exec_spdy
from ._server_exec_ws import serve_exec_websocket
from ._server_kubeapi import ApiResponse, SubresourceRequest, status_body
from ._server_limits import Slots
from ._server_portforward import serve_port_forward_session

logger = logging.getLogger("muxstream.remote")

WEBSOCKET_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
#: Request body bytes the service reads: none. The API answers GET and upgrades
#: only, so any body is refused (413) before a byte of it is read, whoever sent
#: it: a body can never cost memory before authentication.
MAX_BODY_SIZE = 0


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


def request_refusal(config: RemoteServerConfig, request: HTTPRequest) -> ApiResponse | None:
    """The 403 for a request a web page may have made (``browser_refusal``),
    logged in one line; None if the request may go on to authentication."""
    problem = browser_refusal(
        request.headers.get_all("origin"),
        request.headers.get_all("host"),
        allowed_origins=config.allowed_origins,
        no_auth=config.insecure_no_auth,
    )
    if problem is None:
        return None
    logger.warning(
        "refused %s %s from %s: %s", request.method, request.path, current_peer(), problem
    )
    return ApiResponse(403, status_body(403, "Forbidden", problem))


async def _answer(request: HTTPRequest, response: ApiResponse, **headers: str) -> None:
    await request.respond(
        response.status,
        [("content-type", response.content_type), *headers.items()],
        response.body,
    )


class RemoteServer:
    """Serves one configuration as an HTTP application (``transport.HTTPApp``).

    Use :meth:`app` with ``muxstream.transport.serve_http`` (or any server that
    takes an ``HTTPApp``, with ``max_body_size=RemoteServer.max_body_size``),
    or :meth:`handle_connection` with an accepted stream.
    """

    #: Request body bytes the service reads: none (see ``MAX_BODY_SIZE``).
    max_body_size = MAX_BODY_SIZE

    def __init__(self, config: RemoteServerConfig, backend: ExecBackend) -> None:
        self.config = config
        self.backend = backend
        self.throttle = config.limits.throttle()
        #: exec sessions running (each runs one command); attach joins a shared one.
        self.processes = Slots(config.limits.max_processes)
        #: forwarded connections open, over every port-forward session.
        self.forwards = Slots(config.limits.max_forwards)

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve HTTP requests on ``stream`` until it closes (closes it on return)."""
        await handle_http_connection(
            stream,
            self.app,
            handshake_timeout=self.config.handshake_timeout,
            max_body_size=MAX_BODY_SIZE,
        )

    async def app(self, request: HTTPRequest) -> None:
        """Answer one request: 401/403/404 refusals, API documents, or an upgrade."""
        if await self.refuse_browser(request):
            return
        if not _authorized(self.config, request):
            await self.refuse_credentials(request)
            return
        connection = current_connection()
        if connection is not None:
            connection.mark_authenticated()
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
        if not request.is_websocket and not (
            request.is_upgrade and request.headers.has_token("upgrade", "spdy/3.1")
        ):
            message = "Upgrade request required"
            await _answer(request, ApiResponse(400, status_body(400, "BadRequest", message)))
            return
        counts_as_process = target.kind == "exec"
        if counts_as_process and not self.processes.acquire():
            logger.warning(
                "refused exec from %s: %d commands (the limit) are running",
                current_peer(), self.processes.capacity,
            )
            message = f"too many commands running (limit {self.processes.capacity})"
            await _answer(request, ApiResponse(429, status_body(429, "TooManyRequests", message)))
            return
        try:
            if request.is_websocket:
                await self._websocket(request, target)
            else:
                await self._spdy(request, target)
        finally:
            if counts_as_process:
                self.processes.release()

    async def refuse_browser(self, request: HTTPRequest) -> bool:
        """Answer 403 to a request a web page may have made (a foreign ``Origin``;
        without authentication, a ``Host`` that is not loopback) and return True,
        with one WARNING line; False if the request may go on to authentication.

        :meth:`app` starts with it; a server that routes some paths elsewhere
        (``muxstream serve``) calls it for those too."""
        refusal = request_refusal(self.config, request)
        if refusal is None:
            return False
        await _answer(request, refusal)
        return True

    async def refuse_credentials(self, request: HTTPRequest) -> None:
        """Answer 401 and close the connection (one try per connection), after a
        delay if the peer's address keeps failing (:class:`_auth.AuthThrottle`);
        one WARNING line (credentials in the target are redacted)."""
        peer = current_peer()
        delay = self.throttle.failed(peer_host(peer), trio.current_time())
        logger.warning(
            "refused %s %s from %s: missing or wrong credentials%s",
            request.method, request.target, peer,
            f"; answer held {delay:.1f} s (repeated failures)" if delay else "",
        )
        await trio.sleep(delay)
        await _answer(
            request,
            ApiResponse(401, status_body(401, "Unauthorized", "Unauthorized")),
            connection="close",
        )

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
            reason = command_refusal(
                command, self.config.allowed_commands, allow_copy=self.config.allow_copy
            )
            if reason is not None:
                logger.warning("refused command %r from %s: %s", command, current_peer(), reason)
                return ApiResponse(403, status_body(403, "Forbidden", reason))
        if target.kind == "portforward":
            if not self.config.port_forward:
                message = "port-forward is disabled on this server"
                return ApiResponse(403, status_body(403, "Forbidden", message))
            problem = target.ports_error()
            if problem is not None:
                return ApiResponse(400, status_body(400, "BadRequest", problem))
            ports = self.config.allowed_ports
            if ports is not None and any(p not in ports for p in target.ports()):
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
            await serve_port_forward_session(websocket, self.config, target.pod, self.forwards)
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
            await serve_port_forward_session(stream, self.config, target.pod, self.forwards)
        else:
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
    if config.insecure_no_auth:
        logger.warning("%s", no_auth_warning(f"{host}:{port}"))
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
            max_body_size=MAX_BODY_SIZE,
            connection_limits=config.limits.connection_limits(),
            task_status=task_status,
        )


def bound_port(listeners: list[trio.SocketListener]) -> int:
    """The TCP port the first listener is bound to."""
    port: int = listeners[0].socket.getsockname()[1]
    return port
