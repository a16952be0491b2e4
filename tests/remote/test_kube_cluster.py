"""muxstream.kube against the TLS endpoint, kubeconfig variant by variant.

Every variant is checked twice with the same file and the same server: our
client execs through it, and so does the stock kubectl, so what we accept is
what kubectl accepts (and not shaped to our own server).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import yaml

from muxstream.kube import (
    Cluster,
    ContainerNotFound,
    Forbidden,
    PodNotFound,
    Unauthorized,
    load_cluster,
    load_kubeconfig,
)
from muxstream.transport import HandshakeError

from ._kube_helpers import KUBECTL, TOKEN, Endpoint, echo_handler, kube_endpoint

EXEC_V1 = "client.authentication.k8s.io/v1"
EXEC_V1BETA1 = "client.authentication.k8s.io/v1beta1"
FAR_FUTURE = "2099-01-01T00:00:00Z"

PLUGIN = """#!/bin/sh
n=$(( $(cat "$PLUGIN_DIR/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$PLUGIN_DIR/count"
printf '%s' "$KUBERNETES_EXEC_INFO" > "$PLUGIN_DIR/info"
token="$GOOD_TOKEN"
if [ "$n" = 1 ] && [ -n "$FIRST_BAD" ]; then token=wrong-token; fi
printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"%s",\
"expirationTimestamp":"%s"}}' "$PLUGIN_API" "$token" "$EXPIRY"
"""


def config_doc(
    ep: Endpoint | None,
    *,
    cluster: dict[str, object] | None = None,
    user: dict[str, object] | None = None,
    server: str | None = None,
    namespace: str = "default",
) -> dict[str, object]:
    if ep is not None:
        cluster = cluster if cluster is not None else {"certificate-authority": str(ep.ca_path)}
        server = server or f"https://127.0.0.1:{ep.port}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "mux", "cluster": {"server": server, **(cluster or {})}}
        ],
        "users": [{"name": "me", "user": user if user is not None else {"token": TOKEN}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "mux", "user": "me",
                                                 "namespace": namespace}}],
        "current-context": "ctx",
    }


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_plugin(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    plugin = directory / "plugin.sh"
    plugin.write_text(PLUGIN)
    plugin.chmod(0o755)
    return plugin


def plugin_user(
    directory: Path, api: str, *, command: str | None = None, first_bad: bool = False,
    expiry: str = FAR_FUTURE,
) -> dict[str, object]:
    env = {"PLUGIN_DIR": str(directory), "GOOD_TOKEN": TOKEN, "PLUGIN_API": api,
           "EXPIRY": expiry, "FIRST_BAD": "1" if first_bad else ""}
    body: dict[str, object] = {
        "command": command or str(directory / "plugin.sh"),
        "apiVersion": api,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "provideClusterInfo": True,
    }
    if api == EXEC_V1:
        body["interactiveMode"] = "Never"
    return {"exec": body}


async def kubectl_exec(
    ep: Endpoint, kubeconfig: Path | None, env: dict[str, str] | None = None
) -> trio.CompletedProcess[bytes]:
    assert KUBECTL is not None
    argv = [KUBECTL, f"--cache-dir={ep.cache_dir}"]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    full_env = {**ep.env("websocket"), **(env or {})}
    with trio.fail_after(60):
        return await trio.run_process(
            [*argv, "exec", "demo", "--", "echo", "hello"],
            capture_stdout=True, capture_stderr=True, check=False, env=full_env,
        )


async def both_exec(
    ep: Endpoint, kubeconfig: Path | None, env: dict[str, str] | None = None
) -> None:
    """Our client and kubectl both run `echo hello` in pod demo with this kubeconfig."""
    cluster = load_cluster(kubeconfig, environ=env)
    with trio.fail_after(30):
        result = await cluster.exec("demo", ["echo", "hello"])
    assert (result.returncode, result.stdout) == (0, b"hello\n")
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (our client passed)")
    done = await kubectl_exec(ep, kubeconfig, env)
    assert (done.returncode, done.stdout) == (0, b"hello\n"), done.stderr


Variant = Callable[[Path, Endpoint], tuple[Path | None, dict[str, str] | None]]


def ca_file(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    return write(tmp / "kc", config_doc(ep)), None


def inline_ca(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    doc = config_doc(ep, cluster={"certificate-authority-data": b64file(ep.ca_path)})
    return write(tmp / "kc", doc), None


def token_file(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    (tmp / "token").write_text(TOKEN + "\n")
    return write(tmp / "kc", config_doc(ep, user={"tokenFile": str(tmp / "token")})), None


def relative_paths(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    conf = tmp / "conf"
    (conf / "pki").mkdir(parents=True)
    (conf / "pki" / "ca.pem").write_bytes(ep.ca_path.read_bytes())
    (conf / "token").write_text(TOKEN)
    doc = config_doc(ep, cluster={"certificate-authority": "pki/ca.pem"},
                     user={"tokenFile": "token"})
    return write(conf / "kubeconfig", doc), None


def merged_files(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    # The first file has the right cluster "mux" and user; the second redefines
    # both wrongly and names another current context: the first must win.
    first = write(tmp / "one.yaml", {**config_doc(ep), "current-context": ""})
    wrong = config_doc(ep, server="https://127.0.0.1:1", user={"token": "not-the-token"})
    wrong["contexts"] = [*wrong["contexts"],  # type: ignore[list-item]
                         {"name": "other", "context": {"cluster": "mux", "user": "me"}}]
    wrong["current-context"] = "ctx"
    second = write(tmp / "two.yaml", wrong)
    third = write(tmp / "three.yaml", {**wrong, "current-context": "other"})
    listed = os.pathsep.join([str(first), str(tmp / "missing.yaml"), str(second), str(third)])
    return None, {"KUBECONFIG": listed}


def exec_v1(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    write_plugin(tmp / "plugin")
    return write(tmp / "kc", config_doc(ep, user=plugin_user(tmp / "plugin", EXEC_V1))), None


def exec_v1beta1(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    write_plugin(tmp / "bin")
    # a relative command with a slash: resolved against the kubeconfig's directory
    user = plugin_user(tmp / "bin", EXEC_V1BETA1, command="./bin/plugin.sh")
    return write(tmp / "kc", config_doc(ep, user=user)), None


def insecure(tmp: Path, ep: Endpoint) -> tuple[Path | None, dict[str, str] | None]:
    doc = config_doc(ep, cluster={"insecure-skip-tls-verify": True})
    return write(tmp / "kc", doc), None


VARIANTS: dict[str, Variant] = {
    "ca-file": ca_file,
    "inline-ca-data": inline_ca,
    "token-file": token_file,
    "relative-paths": relative_paths,
    "kubeconfig-merge-first-wins": merged_files,
    "exec-plugin-v1": exec_v1,
    "exec-plugin-v1beta1": exec_v1beta1,
    "insecure-skip-tls-verify": insecure,
}


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_variant_works_for_us_and_for_kubectl(tmp_path: Path, name: str) -> None:
    async with kube_endpoint(tmp_path) as ep:
        kubeconfig, env = VARIANTS[name](tmp_path, ep)
        await both_exec(ep, kubeconfig, env)


@pytest.mark.parametrize("inline", [False, True], ids=["files", "inline-data"])
async def test_client_certificate(tmp_path: Path, inline: bool) -> None:
    async with kube_endpoint(tmp_path, client_certs=True) as ep:
        crt, key = tmp_path / "client.crt", tmp_path / "client.key"
        user = (
            {"client-certificate-data": b64file(crt), "client-key-data": b64file(key)}
            if inline
            else {"client-certificate": str(crt), "client-key": str(key)}
        )
        kubeconfig = write(tmp_path / "kc", config_doc(ep, user=user))
        await both_exec(ep, kubeconfig)


async def test_without_the_client_certificate_the_server_refuses(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path, client_certs=True) as ep:
        cluster = load_cluster(write(tmp_path / "kc", config_doc(ep, user={})))
        # TLS 1.3: the server checks the certificate after our handshake
        # finished, so the refusal shows as the connection closing under HTTP.
        with trio.fail_after(30), pytest.raises((trio.BrokenResourceError, HandshakeError)):
            await cluster.exec("demo", ["true"])


async def test_tls_server_name(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path, server_names=("kube.internal",)) as ep:
        plain = load_cluster(write(tmp_path / "plain", config_doc(ep)))
        with trio.fail_after(30), pytest.raises(trio.BrokenResourceError) as caught:
            await plain.exec("demo", ["true"])  # the certificate does not name 127.0.0.1
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        cluster = {"certificate-authority": str(ep.ca_path), "tls-server-name": "kube.internal"}
        await both_exec(ep, write(tmp_path / "kc", config_doc(ep, cluster=cluster)))


async def connect_proxy(
    seen: list[bytes], task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A minimal HTTP CONNECT proxy on loopback; records each request line."""

    async def handle(client: trio.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await client.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0]
            seen.append(request_line)
            method, target, _ = request_line.split(b" ", 2)
            if method != b"CONNECT":
                await client.send_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            _, _, port = target.decode().rpartition(":")
            # Every name is this machine (a test may use a name DNS does not know).
            upstream = await trio.open_tcp_stream("127.0.0.1", int(port))
            async with upstream:
                await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pump(a: trio.SocketStream, b: trio.SocketStream) -> None:
                    try:
                        while data := await a.receive_some(65536):
                            await b.send_all(data)
                        await b.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream)
                    nursery.start_soon(pump, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_proxy_url_tunnels_through_connect(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with kube_endpoint(tmp_path) as ep, trio.open_nursery() as nursery:
        proxy_port = await nursery.start(connect_proxy, seen)
        cluster = {"certificate-authority": str(ep.ca_path),
                   "proxy-url": f"http://127.0.0.1:{proxy_port}"}
        kubeconfig = write(tmp_path / "kc", config_doc(ep, cluster=cluster))
        ours = load_cluster(kubeconfig)
        with trio.fail_after(30):
            assert (await ours.exec("demo", ["echo", "via proxy"])).stdout == b"via proxy\n"
        connect = f"CONNECT 127.0.0.1:{ep.port} HTTP/1.1".encode()
        # GET the pod (to pick the default container, as kubectl), then the exec
        # upgrade: both through the proxy.
        assert seen == [connect, connect]
        if KUBECTL is not None:
            ours_count = len(seen)
            done = await kubectl_exec(ep, kubeconfig)
            assert (done.returncode, done.stdout) == (0, b"hello\n"), done.stderr
            assert len(seen) > ours_count and set(seen) == {connect}
        nursery.cancel_scope.cancel()


async def test_https_proxy_from_the_environment(tmp_path: Path) -> None:
    # Loopback never goes through an environment proxy (Go's rule), so the
    # server is named kube.test, a name only the proxy knows.
    seen: list[bytes] = []
    async with kube_endpoint(tmp_path, server_names=("kube.test",)) as ep, \
            trio.open_nursery() as nursery:
        proxy_port = await nursery.start(connect_proxy, seen)
        kubeconfig = write(tmp_path / "kc", config_doc(ep, server=f"https://kube.test:{ep.port}"))
        env = {"KUBECONFIG": str(kubeconfig), "HTTPS_PROXY": f"127.0.0.1:{proxy_port}"}
        await both_exec(ep, None, env)
        assert seen and set(seen) == {f"CONNECT kube.test:{ep.port} HTTP/1.1".encode()}
        nursery.cancel_scope.cancel()


async def test_proxy_refusal_is_reported(tmp_path: Path) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(4096)
            await stream.send_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")

    async with kube_endpoint(tmp_path) as ep, trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, refuse, 0)
        port = listeners[0].socket.getsockname()[1]
        cluster = {"certificate-authority": str(ep.ca_path),
                   "proxy-url": f"http://u:p@127.0.0.1:{port}"}
        ours = load_cluster(write(tmp_path / "kc", config_doc(ep, cluster=cluster)))
        from muxstream.kube import ProxyError

        with trio.fail_after(30), pytest.raises(ProxyError, match="407"):
            await ours.exec("demo", ["true"])
        nursery.cancel_scope.cancel()


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


async def test_exec_plugin_cached_until_expiry_then_rerun(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep:
        write_plugin(tmp_path / "p")
        user = plugin_user(tmp_path / "p", EXEC_V1, expiry="2050-06-01T00:00:00Z")
        settings = load_kubeconfig(write(tmp_path / "kc", config_doc(ep, user=user))).resolve()
        clock = FakeClock(dt.datetime(2050, 5, 31, tzinfo=dt.UTC))
        cluster = Cluster(settings, now=clock)
        count = tmp_path / "p" / "count"
        with trio.fail_after(30):  # (a container given: one request per exec)
            await cluster.exec("demo", ["true"], container="main", check=True)
            await cluster.exec("demo", ["true"], container="main", check=True)
            assert count.read_text().strip() == "1"  # cached
            clock.now = dt.datetime(2050, 6, 1, 0, 0, 1, tzinfo=dt.UTC)
            await cluster.exec("demo", ["true"], container="main", check=True)
            assert count.read_text().strip() == "2"  # expired: the plugin ran again
        info = yaml.safe_load((tmp_path / "p" / "info").read_text())
        assert info["apiVersion"] == EXEC_V1 and info["kind"] == "ExecCredential"
        assert info["spec"]["interactive"] is False
        assert info["spec"]["cluster"]["server"] == f"https://127.0.0.1:{ep.port}"


async def test_exec_plugin_rerun_on_401(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep:
        write_plugin(tmp_path / "p")
        user = plugin_user(tmp_path / "p", EXEC_V1, first_bad=True)
        cluster = load_cluster(write(tmp_path / "kc", config_doc(ep, user=user)))
        with trio.fail_after(30):
            result = await cluster.exec("demo", ["echo", "second try"])
        assert result.stdout == b"second try\n"
        assert (tmp_path / "p" / "count").read_text().strip() == "2"


async def test_token_file_rotation_is_picked_up(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep:
        token = tmp_path / "token"
        token.write_text("stale")
        doc = config_doc(ep, user={"tokenFile": str(token)})
        cluster = load_cluster(write(tmp_path / "kc", doc))
        with trio.fail_after(30):
            with pytest.raises(Unauthorized):
                await cluster.exec("demo", ["true"])
            token.write_text(TOKEN + "\n")
            assert (await cluster.exec("demo", ["echo", "rotated"])).stdout == b"rotated\n"


async def test_refusals_are_typed_with_the_server_reason(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path, allowed_commands=["echo"]) as ep:
        cluster = load_cluster(write(tmp_path / "kc", config_doc(ep)))
        with trio.fail_after(30):
            with pytest.raises(PodNotFound) as missing:
                await cluster.exec("nope", ["echo"])
            assert missing.value.status == 404 and missing.value.reason == "NotFound"
            assert missing.value.message.startswith('pods "nope" not found')
            with pytest.raises(ContainerNotFound):
                await cluster.exec("demo", ["echo"], container="sidecar")
            with pytest.raises(Forbidden) as forbidden:
                await cluster.exec("demo", ["cat"])
            assert forbidden.value.reason == "Forbidden"
            assert "'cat' is not allowed" in forbidden.value.message
        bad = load_cluster(write(tmp_path / "bad", config_doc(ep, user={"token": "wrong"})))
        with trio.fail_after(30), pytest.raises(Unauthorized):
            await bad.exec("demo", ["echo"])


async def test_exec_plugin_client_certificate(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path, client_certs=True) as ep:
        plugin = tmp_path / "cert-plugin"
        plugin.write_text(
            f"#!{sys.executable}\n"
            "import json, pathlib\n"
            f"d = pathlib.Path({str(tmp_path)!r})\n"
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',\n"
            "  'kind': 'ExecCredential', 'status': {\n"
            "  'clientCertificateData': (d / 'client.crt').read_text(),\n"
            "  'clientKeyData': (d / 'client.key').read_text()}}))\n"
        )
        plugin.chmod(0o755)
        user = {"exec": {"command": str(plugin), "apiVersion": EXEC_V1BETA1}}
        await both_exec(ep, write(tmp_path / "kc", config_doc(ep, user=user)))


RBAC = ('pods "web-0" is forbidden: User "dev@example.com" cannot create resource '
        '"pods/exec" in API group "" in the namespace "shop"')


async def test_server_path_prefix_and_refusals_from_a_gateway(tmp_path: Path) -> None:
    """A gateway serving the API under a path (as Rancher does) refuses with an
    RBAC denial and a kubelet's 'container not found': both typed, for us, and
    the same text for kubectl."""
    from muxstream.kube import ContainerNotRunning
    from muxstream.remote import KubeApi
    from muxstream.remote._server_kubeapi import status_body
    from muxstream.transport import HTTPRequest, serve_http

    prefix = "/k8s/clusters/c-42"
    api = KubeApi({"web-0": ["app"], "job-1": ["app"]}, namespace="shop")
    targets: list[str] = []

    async def app(request: HTTPRequest) -> None:
        targets.append(request.target)
        if not request.target.startswith(prefix + "/"):
            await request.respond(404, [], "no such path")
            return
        path = request.target[len(prefix):]
        if "/pods/web-0/exec" in path:
            await request.respond(403, [("content-type", "application/json")],
                                  status_body(403, "Forbidden", RBAC))
        elif "/pods/job-1/exec" in path:
            # the kubelet's plain-text answer for a container that is not running
            await request.respond(500, [], 'container not found ("app")')
        else:
            answer = api.respond(request.method, path)
            await request.respond(answer.status, [("content-type", answer.content_type)],
                                  answer.body)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_http, app, 0)
        port = listeners[0].socket.getsockname()[1]
        doc = config_doc(None, user={}, namespace="shop",
                         server=f"http://127.0.0.1:{port}{prefix}")
        kubeconfig = write(tmp_path / "kc", doc)
        cluster = load_cluster(kubeconfig)
        with trio.fail_after(30):
            with pytest.raises(Forbidden) as forbidden:
                await cluster.exec("web-0", ["ls"])
            assert (forbidden.value.message, forbidden.value.reason) == (RBAC, "Forbidden")
            with pytest.raises(ContainerNotRunning) as stopped:
                await cluster.exec("job-1", ["ls"])
            assert stopped.value.status == 500
        assert targets and all(t.startswith(prefix + "/") for t in targets)
        if KUBECTL is not None:
            argv = [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path}/cache",
                    "exec", "web-0", "--", "ls"]
            with trio.fail_after(60):
                done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                              check=False)
            assert done.returncode == 1
            assert f"Error from server (Forbidden): {RBAC}".encode() in done.stderr
        nursery.cancel_scope.cancel()


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := await stream.receive_some(size - len(data))):
        data += chunk
    return data


async def test_interactive_attach_and_port_forward_from_python(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep, trio.open_nursery() as nursery:
        cluster = load_cluster(write(tmp_path / "kc", config_doc(ep)))
        listeners = await nursery.start(trio.serve_tcp, echo_handler, 0)
        echo_port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(30):
            async with cluster.open_process("demo", ["tr", "a-z", "A-Z"], stdin=True) as proc:
                assert proc.stdin is not None and proc.stdout is not None
                await proc.stdin.send_all(b"interactive")
                await proc.stdin.aclose()  # EOF: tr finishes
                out = b""
                async for chunk in proc.stdout:
                    out += chunk
                assert (out, await proc.wait()) == (b"INTERACTIVE", 0)
            async with cluster.attach("demo", stdin=True) as proc:
                assert proc.stdin is not None and proc.stdout is not None
                await proc.stdin.send_all(b"hello\nquit\n")
                assert await receive_exactly(proc.stdout, 10) == b"got hello\n"
                assert await proc.wait() == 0
            async with cluster.open_port("demo", echo_port) as stream:
                await stream.send_all(b"one stream")
                await stream.send_eof()
                assert await receive_exactly(stream, 10) == b"one stream"
            local = await nursery.start(cluster.port_forward, "demo", echo_port)
            client = await trio.open_tcp_stream("127.0.0.1", local[0].socket.getsockname()[1])
            async with client:
                await client.send_all(b"listener")
                assert await receive_exactly(client, 8) == b"listener"
        nursery.cancel_scope.cancel()
