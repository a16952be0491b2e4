"""Kubernetes clusters from a kubeconfig: exec, attach, cp and port-forward into pods.

:func:`load_cluster` reads the kubeconfig the way kubectl does (``KUBECONFIG``
with several files merged, first wins; ``~/.kube/config``; a context and its
namespace; CA, client certificates, tokens, token files, exec credential
plugins, ``tls-server-name``, ``proxy-url``) and returns a :class:`Cluster`
whose methods run on trio with muxstream's remote client: WebSocket v5 first,
SPDY as the fallback, and the no-loss close.

Reading YAML needs PyYAML: ``pip install 'muxstream[kube]'``.
See docs/howto-cluster.md.
"""

from ._api import DefaultContainer, default_container
from ._cluster import DEFAULT_CONNECT_TIMEOUT, Cluster, load_cluster
from ._config import ClusterSettings, ExecConfig, Kubeconfig, load_kubeconfig
from ._credentials import DEFAULT_EXEC_TIMEOUT, Credential
from ._endpoint import KubeEndpoint, ProxyError, make_ssl_context
from ._errors import (
    ApiError,
    BadRequest,
    ContainerNotFound,
    ContainerNotRunning,
    CredentialError,
    Forbidden,
    KubeconfigError,
    KubeError,
    MissingDependency,
    NotFound,
    PodNotFound,
    Unauthorized,
    api_error,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_EXEC_TIMEOUT",
    "ApiError",
    "BadRequest",
    "Cluster",
    "ClusterSettings",
    "ContainerNotFound",
    "ContainerNotRunning",
    "Credential",
    "CredentialError",
    "DefaultContainer",
    "ExecConfig",
    "Forbidden",
    "KubeEndpoint",
    "KubeError",
    "Kubeconfig",
    "KubeconfigError",
    "MissingDependency",
    "NotFound",
    "PodNotFound",
    "ProxyError",
    "Unauthorized",
    "api_error",
    "default_container",
    "load_cluster",
    "load_kubeconfig",
    "make_ssl_context",
]
