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

from ._backend import (
    ExecBackend,
    ExecRequest,
    FunctionBackend,
    LocalBackend,
    LocalProcess,
    ProcessHandle,
)
from ._channels import (
    PORT_FORWARD_PROTOCOL,
    PORT_FORWARD_TUNNEL_PROTOCOL,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V5,
    Channel,
    StreamType,
)
from ._client import (
    RemoteEndpoint,
    RemoteError,
    RemoteProcess,
    open_remote_process,
    run_remote,
)
from ._copy import CopyError, CopyResult, copy_from_remote, copy_to_remote
from ._forward import ForwardedStream, PortForwarder, open_port_forward, port_forward
from ._kubeapi import KubeApi
from ._limits import ServiceLimits
from ._server import RemoteServer, RemoteServerConfig, bound_port, serve_remote
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
    "ProcessHandle",
    "RemoteEndpoint",
    "RemoteError",
    "RemoteProcess",
    "RemoteServer",
    "RemoteServerConfig",
    "RemoteStatusError",
    "ServiceLimits",
    "StreamType",
    "TerminalSize",
    "bound_port",
    "copy_from_remote",
    "copy_to_remote",
    "open_port_forward",
    "open_remote_process",
    "port_forward",
    "run_remote",
    "serve_remote",
]
