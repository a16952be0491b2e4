"""A Kubernetes cluster reached through a kubeconfig: exec, attach, cp, port-forward.

:class:`Cluster` turns the resolved kubeconfig (:class:`ClusterSettings`) into a
fresh :class:`KubeEndpoint` per request (current token, TLS context for the
current client certificate) and calls the :mod:`muxstream.remote` client with
it: WebSocket ``v5.channel.k8s.io`` first, SPDY when the server refuses, as
kubectl 1.30+ does.

Authentication failures: when the server answers 401 and the credential can
change (an exec plugin, a token file), the credential is refreshed and the
request made once more, before anything ran remotely (a 401 is always the
answer to the upgrade request). Every refusal comes out as an
:class:`ApiError` subclass carrying the server's reason and message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio

from ..remote import (
    CopyResult,
    ForwardedStream,
    PortForwarder,
    ProgressCallback,
    RemoteError,
    RemoteProcess,
    RemoteStatusError,
    TransportChoice,
    copy_from_remote,
    copy_to_remote,
    open_port_forward,
    open_remote_process,
    run_remote,
)
from ._api import default_container, get_json, pod_path
from ._config import ClusterSettings, load_kubeconfig
from ._credentials import Clock, Credential, CredentialSource, utc_now
from ._endpoint import KubeEndpoint, make_ssl_context, proxy_from_environment
from ._errors import ContainerNotRunning, api_error

T = TypeVar("T")
#: Seconds for TCP connect + TLS handshake (+ proxy CONNECT) of one request;
#: kubectl's default request timeout is unbounded, client-go dials with 30 s.
DEFAULT_CONNECT_TIMEOUT = 30.0


class Cluster:
    """One cluster as one user, from a kubeconfig context (see :func:`load_cluster`).

    Holds no connection: every call opens its own (as kubectl does), so a
    ``Cluster`` may be shared by any number of tasks. ``namespace`` is the
    context's namespace (or the override given to :func:`load_cluster`); each
    method also takes ``namespace=`` for one call.
    """

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        transport: TransportChoice = "auto",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        now: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.transport: TransportChoice = transport
        self.connect_timeout = connect_timeout
        self.credentials = CredentialSource(settings, now=now)
        self._contexts: dict[tuple[bytes | None, bytes | None], ssl.SSLContext] = {}
        # Load the kubeconfig's own CA and client certificate now: a bad PEM is
        # a kubeconfig error, reported before any connection.
        if settings.server.startswith("https://"):
            self._ssl_context(Credential(None, settings.client_cert_pem, settings.client_key_pem))

    @property
    def context(self) -> str:
        """The kubeconfig context this cluster came from."""
        return self.settings.context

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def server(self) -> str:
        return self.settings.server

    def _ssl_context(self, credential: Credential) -> ssl.SSLContext:
        key = (credential.client_cert_pem, credential.client_key_pem)
        context = self._contexts.get(key)
        if context is None:
            context = make_ssl_context(
                ca_pem=self.settings.ca_pem,
                insecure=self.settings.insecure_skip_tls_verify,
                client_cert_pem=credential.client_cert_pem,
                client_key_pem=credential.client_key_pem,
            )
            self._contexts = {key: context}  # keep only the current certificate's
        return context

    async def endpoint(self, namespace: str | None = None) -> KubeEndpoint:
        """A :class:`KubeEndpoint` with the current credential (runs the exec
        plugin if its credential expired; re-reads a changed token file).

        Raises :class:`CredentialError` if the credential source fails.
        """
        settings = self.settings
        credential = await self.credentials.current()
        headers: tuple[tuple[str, str], ...] = ()
        if not credential.token and settings.username is not None:
            import base64

            secret = f"{settings.username}:{settings.password or ''}".encode()
            headers = (("authorization", f"Basic {base64.b64encode(secret).decode()}"),)
        return KubeEndpoint(
            settings.server,
            token=credential.token,
            ssl_context=(
                self._ssl_context(credential) if settings.server.startswith("https://") else None
            ),
            namespace=namespace or settings.namespace,
            transport=self.transport,
            connect_timeout=self.connect_timeout,
            server_hostname=settings.tls_server_name,
            proxy_url=settings.proxy_url,
            extra_headers=headers,
        )

    def _refused(self, exc: RemoteError, attempt: int) -> Exception | None:
        """None to try again with a refreshed credential, else the typed error."""
        if exc.status == 401 and attempt == 0 and self.credentials.refreshable:
            self.credentials.invalidate()
            return None
        return api_error(exc.status, exc.message, exc.reason)

    async def _call(
        self, namespace: str | None, call: Callable[[KubeEndpoint], Awaitable[T]]
    ) -> T:
        for attempt in (0, 1):
            endpoint = await self.endpoint(namespace)
            try:
                return await call(endpoint)
            except RemoteError as exc:
                error = self._refused(exc, attempt)
                if error is not None:
                    raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def _open(
        self,
        namespace: str | None,
        opener: Callable[[KubeEndpoint], AbstractAsyncContextManager[T]],
    ) -> AsyncIterator[T]:
        async with contextlib.AsyncExitStack() as stack:
            for attempt in (0, 1):
                endpoint = await self.endpoint(namespace)
                try:
                    value = await stack.enter_async_context(opener(endpoint))
                    break
                except RemoteError as exc:
                    error = self._refused(exc, attempt)
                    if error is not None:
                        raise error from exc
            yield value

    async def get_pod(self, pod: str, *, namespace: str | None = None) -> dict[str, Any]:
        """The pod object (``GET /api/v1/namespaces/NS/pods/NAME``), decoded JSON.

        Raises :class:`PodNotFound` and the other :class:`ApiError` subclasses."""
        return await self._call(
            namespace, lambda endpoint: get_json(endpoint, pod_path(endpoint.namespace, pod))
        )

    async def default_container(self, pod: str, *, namespace: str | None = None) -> str:
        """The container kubectl picks when none is named: the pod's
        ``kubectl.kubernetes.io/default-container`` annotation, else its first
        container. Raises :class:`ContainerNotRunning` for a completed pod."""
        return default_container(await self.get_pod(pod, namespace=namespace))[0]

    async def _container(self, pod: str, container: str | None, namespace: str | None) -> str:
        return container or await self.default_container(pod, namespace=namespace)

    async def exec(
        self,
        pod: str,
        command: Sequence[str],
        *,
        stdin: bytes | None = None,
        container: str | None = None,
        namespace: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` in ``pod`` and collect its output and exit code.

        ``stdin`` bytes are sent, then EOF. Returns a ``CompletedProcess``;
        with ``check`` a non-zero exit raises ``subprocess.CalledProcessError``.
        Raises an :class:`ApiError` subclass if the server refuses (pod not
        found, forbidden...), :class:`ContainerNotRunning` also when the runtime
        reports it on the error stream. Without ``container``, the pod is read
        first to pick the default one, as kubectl does.
        """
        container = await self._container(pod, container, namespace)
        try:
            return await self._call(
                namespace,
                lambda endpoint: run_remote(
                    endpoint, pod, command, stdin=stdin, container=container, check=check
                ),
            )
        except RemoteStatusError as exc:
            error = api_error(500, str(exc), "InternalError")
            if isinstance(error, ContainerNotRunning):
                raise error from exc
            raise

    def open_process(
        self,
        pod: str,
        command: Sequence[str],
        *,
        container: str | None = None,
        namespace: str | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        tty: bool = False,
    ) -> AbstractAsyncContextManager[RemoteProcess]:
        """Start ``command`` in ``pod``; yields an interactive
        :class:`~muxstream.remote.RemoteProcess` (``stdin``/``stdout``/``stderr``
        streams, ``resize()``, ``wait()``). Leaving the block closes the
        connection (the server then kills a command still running)."""
        streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "tty": tty}
        return self._process(pod, command, container, namespace, streams, attach=False)

    def attach(
        self,
        pod: str,
        *,
        container: str | None = None,
        namespace: str | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        tty: bool = False,
    ) -> AbstractAsyncContextManager[RemoteProcess]:
        """Attach to the main process of ``container`` (``kubectl attach``);
        yields a :class:`~muxstream.remote.RemoteProcess` as :meth:`open_process`."""
        streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "tty": tty}
        return self._process(pod, (), container, namespace, streams, attach=True)

    @asynccontextmanager
    async def _process(
        self,
        pod: str,
        command: Sequence[str],
        container: str | None,
        namespace: str | None,
        streams: Mapping[str, bool],
        *,
        attach: bool,
    ) -> AsyncIterator[RemoteProcess]:
        container = await self._container(pod, container, namespace)
        async with self._open(
            namespace,
            lambda endpoint: open_remote_process(
                endpoint, pod, command, container=container, attach=attach, **streams
            ),
        ) as process:
            yield process

    async def copy_to(
        self,
        pod: str,
        local_path: str | os.PathLike[str],
        remote_path: str,
        *,
        container: str | None = None,
        namespace: str | None = None,
        progress: ProgressCallback | None = None,
        verify: bool = True,
        resume: bool = False,
    ) -> CopyResult:
        """Copy a local file or directory to ``remote_path`` in ``pod`` (through
        exec, with the pod's own tools; see :func:`muxstream.remote.copy_to_remote`
        for the contract: into a directory, temporary name, SHA-256, ``resume``).
        ``progress(done, total)`` follows the transfer."""
        container = await self._container(pod, container, namespace)
        return await self._call(
            namespace,
            lambda endpoint: copy_to_remote(
                endpoint, pod, local_path, remote_path, container=container,
                progress=progress, verify=verify, resume=resume,
            ),
        )

    async def copy_from(
        self,
        pod: str,
        remote_path: str,
        local_path: str | os.PathLike[str],
        *,
        container: str | None = None,
        namespace: str | None = None,
        progress: ProgressCallback | None = None,
        verify: bool = True,
        resume: bool = False,
    ) -> CopyResult:
        """Copy ``remote_path`` (file or directory) in ``pod`` to ``local_path``
        (see :func:`muxstream.remote.copy_from_remote` for the contract)."""
        container = await self._container(pod, container, namespace)
        return await self._call(
            namespace,
            lambda endpoint: copy_from_remote(
                endpoint, pod, remote_path, local_path, container=container,
                progress=progress, verify=verify, resume=resume,
            ),
        )

    def open_port_forward(
        self, pod: str, *, namespace: str | None = None
    ) -> AbstractAsyncContextManager[PortForwarder]:
        """One port-forward connection to ``pod``; ``await forwarder.connect(port)``
        opens a stream to a port, ``forwarder.serve(...)`` listens locally."""
        return self._open(namespace, lambda endpoint: open_port_forward(endpoint, pod))

    @asynccontextmanager
    async def open_port(
        self, pod: str, port: int, *, namespace: str | None = None
    ) -> AsyncIterator[ForwardedStream]:
        """A single byte stream to ``port`` in ``pod`` (a
        ``trio.abc.HalfCloseableStream``), like a TCP connection to it."""
        async with self.open_port_forward(pod, namespace=namespace) as forwarder:
            stream = await forwarder.connect(port)
            async with stream:
                yield stream

    async def port_forward(
        self,
        pod: str,
        remote_port: int,
        local_port: int = 0,
        *,
        host: str = "127.0.0.1",
        namespace: str | None = None,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:local_port`` and forward each connection to
        ``remote_port`` in ``pod`` until cancelled (``kubectl port-forward``).
        ``task_status.started`` gets the listeners (port 0 picks a free one)."""
        async with self.open_port_forward(pod, namespace=namespace) as forwarder:
            await forwarder.serve(remote_port, local_port, host=host, task_status=task_status)


def load_cluster(
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    context: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
    transport: TransportChoice = "auto",
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Cluster:
    """Read the kubeconfig as kubectl does and return the :class:`Cluster` of a context.

    Args:
      kubeconfig: a file (kubectl's ``--kubeconfig``); default ``KUBECONFIG``
        (several files merged, first wins) or ``~/.kube/config``.
      context: default the kubeconfig's current-context.
      namespace: overrides the context's namespace (default ``default``).
      environ: where ``KUBECONFIG``, ``HOME`` and, when the cluster has no
        ``proxy-url``, ``HTTPS_PROXY``/``NO_PROXY`` are read (default ``os.environ``).
      transport: ``"auto"`` (WebSocket, then SPDY), ``"websocket"`` or ``"spdy"``.
      connect_timeout: seconds for connect + TLS (+ proxy) of each request.

    Raises :class:`KubeconfigError` (one line naming the file and the key) and
    :class:`MissingDependency` when PyYAML is not installed. Blocking (reads
    small files); call it before entering trio or accept the short block.
    """
    settings = load_kubeconfig(kubeconfig, environ=environ).resolve(context, namespace=namespace)
    if settings.proxy_url is None:
        proxy = proxy_from_environment(
            settings.server, os.environ if environ is None else environ
        )
        settings = dataclasses.replace(settings, proxy_url=proxy)
    return Cluster(settings, transport=transport, connect_timeout=connect_timeout)
