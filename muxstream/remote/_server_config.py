"""What the exec/attach/port-forward server serves and whom it trusts.

A leaf of the server side: the router (``_server``) and every handler
(``_server_exec_spdy``, ``_server_exec_ws``, ``_server_portforward``) import
:class:`RemoteServerConfig` from here, so none of them imports another.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from .._auth import validate_token
from .._options import DEFAULT_CLOSE_TIMEOUT, SessionKeywords, SessionOptions
from ._server_allow import allow_list_problem
from ._server_backend import ExecBackend
from ._server_kubeapi import KubeApi
from ._server_limits import SERVICE_SESSION_OPTIONS, ServiceLimits

#: Seconds a client has to send its request head to this service (slowloris
#: bound); not transport.DEFAULT_HANDSHAKE_TIMEOUT, the 10 s of the HTTP handshakes.
DEFAULT_REQUEST_HEAD_TIMEOUT = 30.0
#: Seconds to wait for the expected SPDY streams after the upgrade (kubelet's
#: default stream creation timeout is 30 s).
DEFAULT_STREAM_CREATION_TIMEOUT = 30.0


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
      close_timeout: seconds each session's close (and a WebSocket's close
        handshake) may take.
      session_options: options of each exec/port-forward session (as
        :class:`~muxstream.SessionOptions`' fields), replacing the service's
        (``session_window`` of 8 MiB) and, for sessions, ``close_timeout``.
      limits: connections, processes, forwarded sockets, the auth deadline and
        throttle (:class:`ServiceLimits`; defaults fit a 1024-descriptor process).

    Raises:
      ValueError: no authentication, or an allow-list that cannot be honoured.
      TypeError: ``session_options`` names an option that does not exist.
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
    session_options: SessionKeywords = field(default_factory=SessionKeywords)
    limits: ServiceLimits = field(default_factory=ServiceLimits)

    def session_kwargs(self) -> SessionKeywords:
        """Options of each exec/port-forward session: ``close_timeout`` and the
        service's memory budget (``SERVICE_SESSION_OPTIONS``), each overridden
        by ``session_options``."""
        return {"close_timeout": self.close_timeout, **SERVICE_SESSION_OPTIONS,
                **self.session_options}

    def __post_init__(self) -> None:
        if not (self.token or self.client_certs or self.insecure_no_auth):
            raise ValueError(
                "refusing to serve commands without authentication: pass token=..., "
                "client_certs=True (with TLS), or insecure_no_auth=True"
            )
        if self.token is not None:
            validate_token(self.token)
        SessionOptions.resolve(None, self.session_kwargs())  # a misspelt one: now, not per session
        problem = allow_list_problem(self.allowed_commands)
        if problem is not None:
            raise ValueError(f"{problem}; for cp under an allow-list, set allow_copy=True")
