"""A kubectl-compatible endpoint backed by local processes.

Try it (TLS + token, as kubectl requires for tokens):

    export MUXSTREAM_TOKEN=$(openssl rand -hex 16)
    python examples/kubectl_server.py --port 6443 --tls-dir /tmp/kube-demo
    kubectl --kubeconfig /tmp/kube-demo/kubeconfig.yaml exec demo -- uname -a
    echo hi | kubectl --kubeconfig /tmp/kube-demo/kubeconfig.yaml exec -i demo -- cat
    kubectl --kubeconfig /tmp/kube-demo/kubeconfig.yaml cp ./README.md demo:/tmp/README.copy
    kubectl --kubeconfig /tmp/kube-demo/kubeconfig.yaml port-forward demo 8080:8000
    kubectl --kubeconfig /tmp/kube-demo/kubeconfig.yaml attach -i demo

`--tls-dir` writes a throwaway CA, server certificate and a matching kubeconfig
(needs the `trustme` package); without it the server speaks plain HTTP and
must be run with `--insecure-no-auth` (kubectl never sends tokens over HTTP):
see examples/kubeconfig.yaml. The "pod" is named `demo` with container
`main`; commands run in the server's working directory, without a shell;
`attach` connects to a shared `cat -n` process unless `--attach` says otherwise.
`--allow uname --allow-cp` restricts exec to `uname` plus exactly the commands
`kubectl cp` sends (`--allow tar` is refused: tar's options run commands).

Beyond loopback (`--host 10.0.0.2`, `--host 0.0.0.0`, ...) the server needs
`--tls-dir` (the certificate and the kubeconfig then name that host; a wildcard
keeps 127.0.0.1) or, behind a TLS-terminating proxy that passes the token on,
`--insecure-no-tls` (`RemoteServerConfig(insecure_no_tls=True)`);
`--insecure-no-auth` is refused there. A refusal is one line on stderr and exit
status 1, before anything binds.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import ssl
import sys

import trio

from muxstream.remote import KubeApi, LocalBackend, RemoteServerConfig, bound_port, serve_remote

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: muxstream
  cluster:
    server: https://{host}:{port}
    certificate-authority: {ca}
users:
- name: muxstream
  user:
    token: {token}
contexts:
- name: muxstream
  context: {{cluster: muxstream, user: muxstream, namespace: default}}
current-context: muxstream
"""


WILDCARDS = ("", "0.0.0.0", "::")


def client_host(bind_host: str) -> str:
    """The address kubectl should dial: the bound one, or 127.0.0.1 for a wildcard."""
    return "127.0.0.1" if bind_host in WILDCARDS else bind_host


def make_tls(directory: str, host: str) -> ssl.SSLContext:
    """Write a throwaway CA to ``directory``; return a server context it signed,
    for 127.0.0.1, localhost and ``host``."""
    import trustme

    os.makedirs(directory, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(os.path.join(directory, "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    names = dict.fromkeys(["127.0.0.1", "localhost", client_host(host)])
    ca.issue_cert(*names).configure_cert(context)
    return context


def write_kubeconfig(directory: str, host: str, port: int, token: str) -> str:
    path = os.path.join(directory, "kubeconfig.yaml")
    ca = os.path.join(directory, "ca.pem")
    host = client_host(host)
    with open(path, "w") as f:
        f.write(KUBECONFIG.format(host=f"[{host}]" if ":" in host else host, port=port,
                                  ca=ca, token=token))
    return path


async def main() -> str | None:
    """Serve until interrupted; return a one-line error if the service cannot start."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--token", default=os.environ.get("MUXSTREAM_TOKEN"))
    parser.add_argument("--tls-dir", help="write a CA, certificate and kubeconfig here; serve TLS")
    parser.add_argument("--insecure-no-auth", action="store_true", help="no authentication")
    parser.add_argument(
        "--insecure-no-tls",
        action="store_true",
        help="allow a non-loopback --host without TLS (only behind a TLS proxy or a VPN)",
    )
    parser.add_argument("--attach", default="cat -n", help="the process `kubectl attach` joins")
    parser.add_argument("--allow", action="append", help="allowed argv[0] (repeatable)")
    parser.add_argument(
        "--allow-cp", action="store_true", help="also allow exactly what kubectl cp sends"
    )
    args = parser.parse_args()
    if args.tls_dir and not args.token:
        parser.error("--tls-dir needs --token")
    context = make_tls(args.tls_dir, args.host) if args.tls_dir else None
    async with LocalBackend(attach_commands={"main": shlex.split(args.attach)}) as backend:
        try:
            config = RemoteServerConfig(
                token=args.token,
                insecure_no_auth=args.insecure_no_auth,
                insecure_no_tls=args.insecure_no_tls,
                allowed_commands=args.allow or ([] if args.allow_cp else None),
                allow_copy=args.allow_cp,
                backend=backend,
                api=KubeApi({"demo": ["main"]}),
            )
        except ValueError as exc:  # no authentication, a malformed token, tar in --allow
            hint = "--allow-cp" if "allow_copy" in str(exc) else "--token, or --insecure-no-auth"
            return f"kubectl_server: error: {exc} (here: {hint})"
        serve = functools.partial(
            serve_remote, config, args.port, host=args.host, ssl_context=context
        )
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(serve)
            except ValueError as exc:
                # serve_remote refuses, before binding, a host beyond loopback
                # without TLS (unless insecure_no_tls) or without authentication.
                hint = "--tls-dir or --insecure-no-tls; --insecure-no-auth is loopback-only"
                return f"kubectl_server: error: {exc} (here: {hint})"
            except OSError as exc:
                return f"kubectl_server: error: cannot listen on {args.host}:{args.port}: {exc}"
            port = bound_port(listeners)
            if args.tls_dir:
                path = write_kubeconfig(args.tls_dir, args.host, port, args.token)
                print(f"kubeconfig: {path}", flush=True)
            print(f"serving on {args.host}:{port}", flush=True)
    return None


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except* KeyboardInterrupt:  # Ctrl-C, possibly inside trio's exception groups
        pass
