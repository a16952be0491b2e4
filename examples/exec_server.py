"""An exec/attach/port-forward service, with a local or an in-process backend.

Try it (two terminals):

    export MUXSTREAM_TOKEN=$(openssl rand -hex 16)   # in both terminals, the same value
    python examples/exec_server.py --port 7070
    python examples/exec_client.py --url http://127.0.0.1:7070 -- uname -a
    echo hello | python examples/exec_client.py -i -- tr a-z A-Z

`--backend inprocess` answers with Python functions instead of processes
(commands: `echo`, `upper`, `wc`, `exit N`): the way to build a sandbox,
a REPL or a test double. `--allow` restricts argv[0] for the local backend.
The server binds 127.0.0.1 and requires the token; it prints the bound port
(use `--port 0` for any free port).

Beyond loopback (`--host 0.0.0.0`, or any other address) the service needs TLS:

    python examples/exec_server.py --host 0.0.0.0 --cert server.pem --key server.key
    python examples/exec_client.py --url https://HOST:7070 -- uname -a

(the client verifies the certificate against the system trust store; for a
private CA, `SSL_CERT_FILE=ca.pem`). Behind something that already encrypts
(a TLS-terminating proxy, a VPN) say so with `--insecure-no-tls`
(`RemoteServerConfig(insecure_no_tls=True)`). Without either, the server
refuses to start, with one line on stderr and exit status 1, before binding.
"""

from __future__ import annotations

import argparse
import functools
import os
import ssl
import sys

import trio

from muxstream.remote import (
    ExecBackend,
    ExecRequest,
    FunctionBackend,
    LocalBackend,
    RemoteServerConfig,
    bound_port,
    serve_remote,
)


async def toy_shell(
    request: ExecRequest,
    stdin: trio.abc.ReceiveStream,
    stdout: trio.abc.SendStream,
    stderr: trio.abc.SendStream,
) -> int:
    """An in-process "command": no process, no filesystem, just these verbs.
    `attach` (no command) gets `upper`."""
    verb, *args = request.command or ("upper",)
    if verb == "echo":
        await stdout.send_all((" ".join(args) + "\n").encode())
        return 0
    if verb == "upper":
        async for chunk in stdin:
            await stdout.send_all(bytes(chunk).upper())
        return 0
    if verb == "wc":
        total = 0
        async for chunk in stdin:
            total += len(chunk)
        await stdout.send_all(f"{total}\n".encode())
        return 0
    if verb == "exit":
        return int(args[0]) if args else 0
    await stderr.send_all(f"{verb}: unknown command (try echo, upper, wc, exit)\n".encode())
    return 127


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="muxstream exec service")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--token", default=os.environ.get("MUXSTREAM_TOKEN"), required=False)
    parser.add_argument("--backend", choices=["local", "inprocess"], default="local")
    parser.add_argument("--allow", action="append", help="allowed argv[0] (repeatable)")
    parser.add_argument("--cert", help="TLS certificate chain (PEM); with --key")
    parser.add_argument("--key", help="TLS private key (PEM)")
    parser.add_argument(
        "--insecure-no-tls",
        action="store_true",
        help="allow a non-loopback --host without TLS (only behind a TLS proxy or a VPN)",
    )
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or MUXSTREAM_TOKEN) is required")
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.cert:
        try:
            args.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            args.ssl_context.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"cannot load --cert/--key: {exc}")
    else:
        args.ssl_context = None
    return args


async def main() -> str | None:
    """Serve until interrupted; return a one-line error if the service cannot start."""
    args = parse_args()
    backend_cm = (
        FunctionBackend(toy_shell)
        if args.backend == "inprocess"
        else LocalBackend(attach_commands={"main": ["cat"]})
    )
    async with backend_cm as backend, trio.open_nursery() as nursery:
        typed_backend: ExecBackend = backend
        try:
            config = RemoteServerConfig(
                token=args.token,
                insecure_no_tls=args.insecure_no_tls,
                allowed_commands=args.allow,
                backend=typed_backend,
            )
        except ValueError as exc:  # a malformed token
            return f"exec_server: error: --token: {exc}"
        serve = functools.partial(
            serve_remote, config, args.port, host=args.host, ssl_context=args.ssl_context
        )
        try:
            listeners = await nursery.start(serve)
        except ValueError as exc:
            # serve_remote refuses, before binding, a host beyond loopback
            # without TLS unless config.insecure_no_tls says something else encrypts.
            return f"exec_server: error: {exc} (here: --cert/--key, or --insecure-no-tls)"
        except OSError as exc:
            return f"exec_server: error: cannot listen on {args.host}:{args.port}: {exc}"
        scheme = "https" if args.ssl_context else "http"
        print(f"listening on {args.host}:{bound_port(listeners)} ({scheme})", flush=True)
    return None


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except* KeyboardInterrupt:  # Ctrl-C, possibly inside trio's exception groups
        sys.exit(130)
