"""``muxstream serve``: every service on one port.

Each accepted connection (after TLS, with ``--cert/--key``) is told apart by its
first byte: a SPDY control frame starts with ``0x80`` (the control bit and version
3), an HTTP request with a letter. Raw sessions get the muxstream service
(``_service``); HTTP requests go to ``/muxstream`` (SPDY/3.1 upgrade or WebSocket,
same service) or to :class:`muxstream.remote.RemoteServer` (exec, attach, cp,
port-forward and the kubectl API surface).

Before binding, :func:`check_serve_args` applies the exec service's exposure
policy (``muxstream._auth``): beyond loopback, no ``--insecure-no-auth`` ever, and
TLS (``--cert/--key``) unless ``--insecure-no-tls``.

SIGINT/SIGTERM stop accepting, close every muxstream session gracefully
(GOAWAY, flush, FIN, drain -- bounded by ``close_timeout``), then cancel what
remains (exec and port-forward connections). A second signal exits at once.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import secrets
import signal
import ssl
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable

import trio

from .._auth import exposure_problem, no_auth_warning, validate_token
from .._session import SERVER, Session, open_session
from ..remote import (
    PortRanges,
    RemoteServer,
    ServiceLimits,
    allow_list_problem,
    raise_nofile_limit,
)
from ..transport import (
    HandshakeError,
    HTTPRequest,
    current_connection,
    handle_http_connection,
    serve_connections,
    wrap_prefixed,
    wrap_tls_server,
)
from ._common import ENV_TOKEN, Address, CliError, check_file, listen_error, load_pem
from ._service import MUX_PATH, WEBSOCKET_SUBPROTOCOL, authorized, serve_session

logger = logging.getLogger("muxstream.cli")

#: seconds a new connection has to send its first byte (and to finish TLS).
FIRST_BYTE_TIMEOUT = 30.0
_SPDY_CONTROL_BYTE = 0x80


class Server:
    """The state of one ``serve`` run: the live muxstream sessions."""

    def __init__(
        self,
        token: str | None,
        remote: RemoteServer,
        ssl_context: ssl.SSLContext | None,
        close_timeout: float,
    ) -> None:
        self.token = token
        self.remote = remote
        self.remote_app = remote.app
        self.ssl_context = ssl_context
        self.close_timeout = close_timeout
        self.sessions: set[Session] = set()
        #: exec/attach/cp/port-forward (and API) requests being served
        self.remote_requests = 0
        self.stopping = False

    async def run_session(self, transport: trio.abc.Stream, token: str | None) -> None:
        """Serve one session until the peer leaves; a broken peer is logged, not raised."""
        try:
            async with open_session(
                transport, role=SERVER, close_timeout=self.close_timeout
            ) as session:
                self.sessions.add(session)
                try:
                    await serve_session(session, token, self.remote.throttle)
                finally:
                    self.sessions.discard(session)
        except* (trio.BrokenResourceError, trio.ClosedResourceError) as group:
            for exc in group.exceptions:
                logger.info("session ended: %s (%r)", exc, exc.__cause__)

    async def handle_tcp(self, tcp: trio.SocketStream) -> None:
        """Serve one connection; its failures are logged and end only that connection."""
        try:
            await self._handle_tcp(tcp)
        except Exception as exc:
            logger.warning("connection failed: %r", exc, exc_info=logger.isEnabledFor(10))
            await trio.aclose_forcefully(tcp)

    async def _handle_tcp(self, tcp: trio.SocketStream) -> None:
        transport: trio.abc.Stream = tcp
        try:
            if self.ssl_context is not None:
                transport = await wrap_tls_server(
                    tcp, self.ssl_context, handshake_timeout=FIRST_BYTE_TIMEOUT
                )
            with trio.move_on_after(FIRST_BYTE_TIMEOUT):
                first = await transport.receive_some(64 * 1024)
        except (trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError) as exc:
            logger.debug("connection dropped before its first byte: %r", exc)
            await trio.aclose_forcefully(transport)
            return
        else:
            if not first:  # EOF or no byte in time
                await trio.aclose_forcefully(transport)
                return
        replayed = wrap_prefixed(transport, bytes(first))
        if first[0] == _SPDY_CONTROL_BYTE:
            await self.run_session(replayed, self.token)
        else:
            await handle_http_connection(
                replayed, self.app, max_body_size=RemoteServer.max_body_size
            )

    async def app(self, request: HTTPRequest) -> None:
        if request.path != MUX_PATH:
            self.remote_requests += 1  # counted for the shutdown line
            try:
                await self.remote_app(request)
            finally:
                self.remote_requests -= 1
            return
        if await self.remote.refuse_browser(request):
            return
        values = request.headers.get_all("authorization")
        # Exactly one Authorization line counts; two are ambiguous and refused.
        if not authorized(self.token, values[0] if len(values) == 1 else None):
            await self.remote.refuse_credentials(request)
            return
        connection = current_connection()
        if connection is not None:
            connection.mark_authenticated()
        if request.is_websocket:
            protocol = request.negotiate_subprotocol([WEBSOCKET_SUBPROTOCOL])
            try:
                transport: trio.abc.Stream = await request.accept_websocket(protocol)
            except HandshakeError:
                return
        elif request.is_upgrade and request.headers.has_token("upgrade", "spdy/3.1"):
            transport = await request.accept_upgrade(upgrade="SPDY/3.1")
        else:
            await request.respond(
                400, [("content-type", "text/plain")],
                b"upgrade to SPDY/3.1 or websocket to start a muxstream session\n",
            )
            return
        await self.run_session(transport, None)

    async def close_sessions(self) -> None:
        async with trio.open_nursery() as nursery:
            for session in list(self.sessions):
                nursery.start_soon(session.aclose)


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context for ``--cert``/``--key``; a missing or unusable file is a
    CliError that names the option and the file."""
    if not args.cert:
        if args.key:
            raise CliError(f"--key {args.key} needs --cert (the certificate chain)")
        return None
    check_file("--cert", args.cert)
    if args.key:
        check_file("--key", args.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    what = f"--cert {args.cert}" + (f" with --key {args.key}" if args.key else "")
    load_pem(what, context.load_cert_chain, args.cert, args.key)
    # No TLS 1.3 session tickets: no client of this server resumes a session
    # (each muxstream command and kubectl start a new handshake), and every
    # client would hold two tickets (~10 KiB) per connection for nothing.
    context.num_tickets = 0
    return context


#: Permission bits of a --token-file that refuse it: anyone beyond its owner and
#: group may read or write it (a token readable by every local user is no secret).
TOKEN_FILE_FORBIDDEN_MODE = 0o007


def read_token_file(path: str) -> str:
    """The token in ``path`` (its first line, surrounding whitespace removed).

    Raises CliError if the file cannot be read, is empty, or is readable or
    writable by users other than its owner and group.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & TOKEN_FILE_FORBIDDEN_MODE:
                raise CliError(
                    f"--token-file {path}: other users can access it (mode "
                    f"{stat.S_IMODE(mode):o}); run chmod 600 {path}"
                )
            token = file.readline().strip()
    except OSError as exc:
        raise CliError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise CliError(f"--token-file {path}: the file is empty")
    return token


def resolve_token(args: argparse.Namespace) -> str | None:
    """The token serve uses: ``--token``, ``--token-file`` or ``MUXSTREAM_TOKEN``
    (giving both flags is refused). Sets ``args.token``."""
    if args.token and args.token_file:
        raise CliError("give one of --token and --token-file, not both")
    if args.token:
        pass
    elif args.token_file:
        args.token = read_token_file(args.token_file)
    else:
        args.token = os.environ.get(ENV_TOKEN) or None
    token: str | None = args.token
    return token


def check_serve_args(args: argparse.Namespace) -> None:
    """Refuse, before anything binds, what the security policy forbids.

    Resolves the token first (:func:`resolve_token`). Raises CliError (one line,
    exit status 1) for ``--insecure-no-auth`` on an address that is not
    loopback, for no ``--cert`` on such an address without ``--insecure-no-tls``,
    for a token that is not visible ASCII, and for an unusable ``--token-file``.
    """
    resolve_token(args)
    host = args.address.host
    problem = exposure_problem(
        host,
        tls=bool(args.cert),
        # A token wins over --insecure-no-auth (serve_main then uses the token).
        insecure_no_auth=args.insecure_no_auth and not args.token,
        insecure_no_tls=args.insecure_no_tls,
    )
    if problem == "auth":
        raise CliError(
            f"refusing --insecure-no-auth on {host or '*'}: without a token, serve only on "
            "loopback (127.0.0.1, ::1, localhost)"
        )
    if problem == "tls":
        raise CliError(
            f"refusing to serve on {host or '*'} without TLS: give --cert and --key, or "
            "--insecure-no-tls if something else encrypts the traffic (tokens would "
            "cross the network in clear text)"
        )
    refused = allow_list_problem(args.allow)
    if refused is not None:
        raise CliError(f"--allow: {refused}; for cp and kubectl cp, use --allow-cp instead")
    if args.token:
        try:
            validate_token(args.token)
        except ValueError as exc:
            raise CliError(f"bad --token/--token-file/{ENV_TOKEN}: {exc}") from None


async def listen(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    address: Address,
    limits: ServiceLimits,
    handler_nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind ``address`` and serve connections under ``limits`` (like trio.serve_tcp)."""
    listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    await serve_connections(
        handler, listeners, limits.connection_limits(),
        handler_nursery=handler_nursery, task_status=task_status,
    )


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def announce_generated_token(token: str) -> str | None:
    """Tell the operator the token ``serve`` generated, never into a log.

    On a terminal it is printed. Otherwise (a service manager, a pipe to a log
    file) it goes to a new file only this user can read, whose path is printed
    instead; returns that path (removed when serve exits).
    """
    if sys.stdout.isatty():
        print(f"generated a token: export {ENV_TOKEN}={token}", flush=True)
        return None
    fd, path = tempfile.mkstemp(prefix="muxstream-token-")  # mode 0600
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    atexit.register(_remove_quietly, path)
    print(f"generated a token in {path} (readable by this user only): "
          f"export {ENV_TOKEN}=$(cat {path})", flush=True)
    return path


def port_forward_enabled(args: argparse.Namespace) -> bool:
    """Whether serve offers port-forward: not with ``--no-port-forward``, and not
    when ``--allow`` or ``--allow-cp`` restricts exec but no ``--allow-port``
    names a port (a restricted service must not reach every local port by
    default)."""
    if args.no_port_forward:
        return False
    return not ((args.allow or args.allow_cp) and not args.allow_port)


async def serve_main(args: argparse.Namespace) -> int:
    from ..remote import KubeApi, LocalBackend, RemoteServerConfig

    token_on_argv = bool(args.token)
    check_serve_args(args)
    raise_nofile_limit()
    if token_on_argv:
        print(
            "muxstream serve: warning: --token on the command line is visible to every "
            f"local user (ps, /proc); prefer {ENV_TOKEN} or --token-file",
            file=sys.stderr, flush=True,
        )
    # The audit trail (one line per exec, attach and forwarded connection) is
    # shown at the default verbosity, unlike other INFO lines.
    logging.getLogger("muxstream.audit").setLevel(logging.INFO)
    address: Address = args.address
    token: str | None = args.token
    if not token and not args.insecure_no_auth:
        token = secrets.token_urlsafe(18)
        announce_generated_token(token)
    ssl_context = server_ssl_context(args)
    attach = {"main": args.attach_command.split()} if args.attach_command else {}
    # Without a terminal, a client's EOF is the attach process's EOF (`echo hi |
    # muxstream attach -i` ends); on a terminal ^D does that, and a client that
    # leaves does not end the shared process.
    async with LocalBackend(
        attach_commands=attach, attach_tty=args.attach_tty,
        attach_stdin_once=not args.attach_tty,
    ) as backend:
        config = RemoteServerConfig(
            # kubectl attach -t needs the container spec to say tty: true.
            api=KubeApi(tty_containers=list(attach) if args.attach_tty else ()),
            token=token,
            insecure_no_auth=not token,
            insecure_no_tls=args.insecure_no_tls,
            allowed_origins=args.allow_origin or (),
            # --allow-cp alone is an allow-list too: nothing but the copy commands.
            allowed_commands=args.allow or ([] if args.allow_cp else None),
            allow_copy=args.allow_cp,
            allowed_ports=PortRanges(args.allow_port) if args.allow_port else None,
            port_forward=port_forward_enabled(args),
            backend=backend,
            close_timeout=args.close_timeout,
        )
        remote = RemoteServer(config, backend)
        server = Server(token, remote, ssl_context, args.close_timeout)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as listening:
                    try:
                        listeners = await listening.start(
                            listen, server.handle_tcp, address, config.limits, connections
                        )
                    except OSError as exc:
                        raise listen_error(
                            exc, address, "another muxstream serve? pick another port with "
                            "-a HOST:PORT, or port 0 for a free one") from None
                    port = listeners[0].socket.getsockname()[1]
                    if not token:
                        where = f"{address.host}:{port}"
                        print(f"muxstream serve: warning: {no_auth_warning(where)}",
                              file=sys.stderr, flush=True)
                    scheme = "tls" if ssl_context else "tcp"
                    print(
                        f"muxstream serve: listening on {address.host}:{port} ({scheme}; "
                        f"muxstream sessions, {MUX_PATH} upgrade/WebSocket, exec/attach/"
                        "port-forward, kubectl API)",
                        flush=True,
                    )
                    async for signum in signals:
                        print(
                            f"muxstream serve: {signal.Signals(signum).name}: closing "
                            f"{len(server.sessions)} session(s) gracefully, ending "
                            f"{server.remote_requests} exec/attach/cp/port-forward "
                            "connection(s)",
                            file=sys.stderr, flush=True,
                        )
                        listening.cancel_scope.cancel()
                        break
                # Graceful close of muxstream sessions; a second signal cuts it short.
                with trio.move_on_after(args.close_timeout + 1) as scope:
                    async with trio.open_nursery() as closing:

                        async def second_signal() -> None:
                            async for _ in signals:
                                print("muxstream serve: closing hard", file=sys.stderr)
                                scope.cancel()

                        closing.start_soon(second_signal)
                        await server.close_sessions()
                        closing.cancel_scope.cancel()
                connections.cancel_scope.cancel()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
