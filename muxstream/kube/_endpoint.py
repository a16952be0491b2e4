"""Connecting to an API server: TLS as the kubeconfig says, optionally through a proxy.

:class:`KubeEndpoint` is a :class:`muxstream.remote.RemoteEndpoint` (so every
remote client function takes it) that adds what a kubeconfig can ask for:

* ``server_hostname``: the name to verify the certificate against and send as
  SNI (``tls-server-name``) when it differs from the URL's host;
* ``proxy_url``: an ``http://[user:pass@]host:port`` proxy reached with
  ``CONNECT host:port`` (``proxy-url``); the TLS handshake with the API server
  then runs inside the tunnel, so the proxy sees only ciphertext;
* a path prefix from the server URL (``https://host/k8s/clusters/c-1``, as
  Rancher and other gateways serve the API);
* extra headers (basic auth).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import math
import os
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import trio

from ..remote import RemoteEndpoint
from ..transport import open_tcp_or_tls_stream
from ._errors import KubeconfigError

#: Largest proxy answer head we read before giving up (real ones are < 1 KiB).
MAX_PROXY_RESPONSE = 16 * 1024


class ProxyError(OSError):
    """The HTTP proxy refused or broke the CONNECT tunnel."""


def make_ssl_context(
    *,
    ca_pem: bytes | None,
    insecure: bool,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    origin: str | None = None,
) -> ssl.SSLContext:
    """The client TLS context a kubeconfig cluster+user asks for.

    With a CA only that CA is trusted (as client-go does), else the system
    store; ``insecure`` verifies nothing. Raises :class:`KubeconfigError`
    (``origin`` names the file) for a PEM that does not load.
    """
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_pem:
        try:
            context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
            raise KubeconfigError(origin, "certificate-authority", f"not a PEM CA: {exc}") from None
    else:
        context = ssl.create_default_context()
    # kubectl speaks HTTP/1.1 for upgrades; say so, for servers that look at ALPN.
    context.set_alpn_protocols(["http/1.1"])
    if client_cert_pem and client_key_pem:
        # ssl loads certificate chains from files only: a private directory,
        # removed as soon as the context holds the key.
        directory = tempfile.mkdtemp(prefix="muxstream-kube-")
        try:
            cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
            for path, data in ((cert_path, client_cert_pem), (key_path, client_key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise KubeconfigError(
                origin, "client-certificate", f"certificate and key do not load: {exc}"
            ) from None
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return context


async def _receive_head(stream: trio.abc.Stream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > MAX_PROXY_RESPONSE:
            raise ProxyError("proxy answer too long")
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise ProxyError("proxy closed the connection during CONNECT")
        head += chunk
    end = head.index(b"\r\n\r\n") + 4
    if head[end:]:
        # A server never speaks before our TLS hello: bytes here are not a tunnel.
        raise ProxyError("proxy sent data after its CONNECT answer")
    return head[:end]


async def open_connect_tunnel(proxy_url: str, host: str, port: int) -> trio.SocketStream:
    """A TCP connection through an HTTP proxy's ``CONNECT`` to ``host:port``."""
    proxy = urlsplit(proxy_url)
    if proxy.scheme != "http" or not proxy.hostname:
        raise ProxyError(f"unsupported proxy-url {proxy_url!r} (only http:// proxies)")
    stream = await trio.open_tcp_stream(proxy.hostname, proxy.port or 80)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.username is not None:
            secret = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(secret.encode()).decode()}")
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await _receive_head(stream)
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].startswith("2"):
            raise ProxyError(f"proxy refused CONNECT {authority}: {status_line}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


def _no_proxy_matches(entry: str, host: str, port: int) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    with contextlib.suppress(ValueError):
        network = ipaddress.ip_network(entry, strict=False)
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(host) in network
        return False
    name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if entry_port and entry_port != str(port):
        return False
    if name.startswith("."):
        return host.endswith(name)
    return host == name or host.endswith("." + name)


def proxy_from_environment(server: str, environ: Mapping[str, str]) -> str | None:
    """The proxy kubectl (Go's ``ProxyFromEnvironment``) would use for ``server``.

    ``HTTPS_PROXY`` (or ``https_proxy``) for https servers, ``HTTP_PROXY`` for
    http; none for ``localhost`` and loopback addresses, nor for hosts that
    ``NO_PROXY`` names (``*``, host names also matching their subdomains, a
    leading ``.`` for subdomains only, IP addresses and CIDR ranges, optional
    ``:port``). A value without a scheme means ``http://``.
    """
    split = urlsplit(server)
    host = (split.hostname or "").lower()
    port = split.port or (443 if split.scheme == "https" else 80)
    if host == "localhost":
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    names = ("HTTPS_PROXY", "https_proxy") if split.scheme == "https" else (
        "HTTP_PROXY", "http_proxy")
    proxy = next((environ[n] for n in names if environ.get(n)), None)
    if proxy is None:
        return None
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    if any(_no_proxy_matches(entry, host, port) for entry in no_proxy.split(",")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


@dataclass(frozen=True)
class KubeEndpoint(RemoteEndpoint):
    """A :class:`~muxstream.remote.RemoteEndpoint` with kubeconfig's extras
    (module docstring). Build one with :meth:`muxstream.kube.Cluster.endpoint`."""

    server_hostname: str | None = None
    proxy_url: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()

    def path(self, pod: str, subresource: str) -> str:
        prefix = urlsplit(self.url).path.rstrip("/")
        return prefix + super().path(pod, subresource)

    def headers(self) -> list[tuple[str, str]]:
        return [*super().headers(), *self.extra_headers]

    async def connect(self) -> tuple[trio.abc.Stream, str]:
        if self.proxy_url is None and self.server_hostname is None:
            return await super().connect()
        host, port, context, netloc = self._address()
        with trio.fail_after(self.connect_timeout):
            if self.proxy_url is None:
                stream: trio.abc.Stream = await open_tcp_or_tls_stream(
                    host,
                    port,
                    ssl_context=context,
                    server_hostname=self.server_hostname,
                    https_compatible=True,
                    handshake_timeout=math.inf,
                )
                return stream, netloc
            tunnel = await open_connect_tunnel(self.proxy_url, host, port)
            if context is None:
                return tunnel, netloc
            tls = trio.SSLStream(
                tunnel,
                context,
                server_hostname=self.server_hostname or host,
                https_compatible=True,
            )
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tunnel)
                raise
            return tls, netloc
