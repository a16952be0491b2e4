"""Remote commands and port-forwarding, wire-compatible with Kubernetes and kubectl.

Server: :func:`serve_remote` with a :class:`RemoteServerConfig` serves exec,
attach, cp (tar through exec) and port-forward over SPDY and WebSocket, plus
enough of the Kubernetes API for a stock ``kubectl``. Backends
(:class:`LocalBackend`, :class:`FunctionBackend`, or your own
:class:`ExecBackend`) decide what actually runs.

Client: :func:`run_remote`, :func:`open_remote_process`, :func:`port_forward`,
:func:`copy_to_remote`, :func:`copy_from_remote` (verified copies through a
temporary name, with resume).

Protocol facts and the threat model: docs/kubernetes.md.
"""

# The private modules say their side in their names (a test keeps the two sides
# apart: no ``_client_*`` module imports a ``_server*`` one, nor the reverse):
#
# * both sides: ``_channels`` (stream types, channel bytes, versions; sans-IO),
#   ``_status`` (Status documents, resize; sans-IO), ``_ws_channels`` (channels
#   over a WebSocket), ``_pipe`` (a bounded in-memory pipe);
# * server: ``_server`` (the router and :func:`serve_remote`), ``_server_config``
#   (:class:`RemoteServerConfig`, a leaf), the handlers ``_server_exec_spdy``,
#   ``_server_exec_ws`` and ``_server_portforward``, and what they run on:
#   ``_server_pump`` (a process to its streams), ``_server_backend`` and
#   ``_server_spawn`` (processes), ``_server_kubeapi`` (the API kubectl reads),
#   ``_server_allow`` and ``_server_limits`` (policy and bounds);
# * client: ``_client_endpoint`` (where to connect, the upgrade), ``_client_exec``,
#   ``_client_portforward``, ``_client_copy`` (with ``_client_copy_parts`` and
#   ``_client_copy_tar``).

from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V5,
    Channel,
    StreamType,
)
from ._client_copy import (
    CopyError,
    CopyResult,
    ProgressCallback,
    copy_from_remote,
    copy_to_remote,
)
from ._client_endpoint import RemoteEndpoint, RemoteError, TransportChoice
from ._client_exec import RemoteProcess, open_remote_process, run_remote
from ._client_portforward import ForwardedStream, PortForwarder, open_port_forward, port_forward
from ._server import RemoteServer, bound_port, serve_remote
from ._server_allow import allow_list_problem
from ._server_backend import (
    ExecBackend,
    ExecRequest,
    FunctionBackend,
    LocalBackend,
    LocalProcess,
    ProcessHandle,
)
from ._server_config import RemoteServerConfig
from ._server_kubeapi import KubeApi, PortRanges
from ._server_limits import ServiceLimits, raise_nofile_limit
from ._status import ExitStatus, RemoteStatusError, TerminalSize

__all__ = [
    "PORT_FORWARD_PROTOCOL",
    "PORT_FORWARD_TUNNEL_PROTOCOL",
    "STREAM_PROTOCOL_V4",
    "STREAM_PROTOCOL_V5",
    "Channel",
    "CopyError",
    "CopyResult",
    "ExecBackend",
    "ExecRequest",
    "ExitStatus",
    "ForwardedStream",
    "FunctionBackend",
    "KubeApi",
    "LocalBackend",
    "LocalProcess",
    "PortForwarder",
    "PortRanges",
    "ProcessHandle",
    "ProgressCallback",
    "RemoteEndpoint",
    "RemoteError",
    "RemoteProcess",
    "RemoteServer",
    "RemoteServerConfig",
    "RemoteStatusError",
    "ServiceLimits",
    "StreamType",
    "TerminalSize",
    "TransportChoice",
    "allow_list_problem",
    "bound_port",
    "copy_from_remote",
    "copy_to_remote",
    "open_port_forward",
    "open_remote_process",
    "port_forward",
    "raise_nofile_limit",
    "run_remote",
    "serve_remote",
]
