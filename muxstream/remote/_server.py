"""The exec/attach/port-forward server: HTTP routing, authentication, upgrades.

Threat model (see docs/kubernetes.md and docs/reliability.md): this service
runs commands for whoever reaches it. So it listens on loopback unless told
otherwise, refuses to listen beyond loopback without TLS (unless
``insecure_no_tls``) or without authentication (always), requires a bearer token
(SHA-256 digests compared in constant time, ``_auth``) or a verified TLS client
certificate, and answers 401/403/400 before any process starts or any upgrade
happens. Commands run without a shell (argv as given, no expansion);
``allowed_commands`` restricts argv[0] (``allow_copy`` adds the exact argv
shapes cp needs, ``_allow``); ``allowed_ports`` restricts
port-forward targets. kubectl only sends bearer tokens over TLS, so serving
kubectl with a token means serving TLS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import trio

from .._options import DEFAULT_CLOSE_TIMEOUT
from ..transport import HandshakeError, HTTPRequest, handle_http_connection, serve_http
from ..transport._connections import current_connection, current_peer
from ._allow import allow_list_problem, command_refusal
from ._auth import (
    bearer_token_matches,
    browser_refusal,
    exposure_problem,
    peer_host,
    validate_token,
)
from ._backend import ExecBackend, LocalBackend
from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    SUPPORTED_STREAM_PROTOCOLS,
)
from ._exec_ws import serve_exec_websocket
from ._kubeapi import ApiResponse, KubeApi, SubresourceRequest, status_body
from ._limits import SERVICE_SESSION_OPTIONS, ServiceLimits, Slots

logger = logging.getLogger("muxstream.remote")

#: Seconds a client has to send its request head to this service (slowloris
#: bound); not transport.DEFAULT_HANDSHAKE_TIMEOUT, the 10 s of the HTTP handshakes.
DEFAULT_REQUEST_HEAD_TIMEOUT = 30.0
#: Seconds to wait for the expected SPDY streams after the upgrade (kubelet's
#: default stream creation timeout is 30 s).
DEFAULT_STREAM_CREATION_TIMEOUT = 30.0
WEBSOCKET_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
#: Request body bytes the service reads: none. The API answers GET and upgrades
#: only, so any body is refused (413) before a byte of it is read, whoever sent
#: it: a body can never cost memory before authentication.
MAX_BODY_SIZE = 0


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
      allowed_origins: the ``Origin`` values (``scheme://host[:port]``) of web
        pages allowed to use this server; any other request carrying an
        ``Origin`` is refused (403), whatever the auth mode. kubectl and the
        Python clients send none; browsers always do.
      allowed_commands: if set, exec is refused (403) unless argv[0] is listed
        (with any arguments). ``tar`` and ``find`` cannot be listed (ValueError):
        their options run other commands; use ``allow_copy``.
      allow_copy: with ``allowed_commands``, also admit exactly the argv shapes
        that ``muxstream cp`` and ``kubectl cp`` send (tar, find, sha256sum...
        with checked operands; docs/cli.md, "Copy under an allow-list"), so
        copies work under an allow-list without allowing those programs.
      allowed_ports: if set, port-forward is refused unless the port is listed
        (the ``ports=`` of the request and each forwarded connection's port).
      port_forward: False refuses every port-forward request (403).
      backend: runs the commands; a :class:`LocalBackend` by default.
      api: the fake Kubernetes API (pods and containers kubectl may address).
      forward_host: where port-forward connects (the "pod" network).
      limits: connections, processes, forwarded sockets, the auth deadline and
        throttle (:class:`ServiceLimits`; defaults fit a 1024-descriptor process).
    """

    token: str | None = None
    client_certs: bool = False
    insecure_no_auth: bool = False
    insecure_no_tls: bool = False
    allowed_origins: Collection[str] = ()
    allowed_commands: Collection[str] | None = None
    allow_copy: bool = False
    allowed_ports: Collection[int] | None = None
    port_forward: bool = True
    backend: ExecBackend | None = None
    api: KubeApi = field(default_factory=KubeApi)
    forward_host: str = "127.0.0.1"
    handshake_timeout: float = DEFAULT_REQUEST_HEAD_TIMEOUT
    stream_creation_timeout: float = DEFAULT_STREAM_CREATION_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    session_options: dict[str, Any] = field(default_factory=dict)
    limits: ServiceLimits = field(default_factory=ServiceLimits)

    def session_kwargs(self) -> dict[str, Any]:
        """Options of each exec/port-forward session: the service's memory budget
        (``SERVICE_SESSION_OPTIONS``) overridden by ``session_options``."""
        return {**SERVICE_SESSION_OPTIONS, **self.session_options}

    def __post_init__(self) -> None:
        if not (self.token or self.client_certs or self.insecure_no_auth):
            raise ValueError(
                "refusing to serve commands without authentication: pass token=..., "
                "client_certs=True (with TLS), or insecure_no_auth=True"
            )
        if self.token is not None:
            validate_token(self.token)
        problem = allow_list_problem(self.allowed_commands)
        if problem is not None:
            raise ValueError(f"{problem}; for cp under an allow-list, set allow_copy=True")


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
    """The 403 for a request a web page may have made (``_auth.browser_refusal``),
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


def no_auth_warning(where: str) -> str:
    """The one line said at start-up when a server runs without authentication."""
    try:
        import pwd

        user = f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"
    except (ImportError, KeyError):
        user = "this user"
    return (
        f"no authentication on {where}: every local user (and every program on this "
        f"machine) can run commands as {user} through it"
    )


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
        refusal = request_refusal(self.config, request)
        if refusal is not None:
            await _answer(request, refusal)
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
            from ._portforward import serve_port_forward_session

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
            from ._portforward import serve_port_forward_session

            await serve_port_forward_session(stream, self.config, target.pod, self.forwards)
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
