"""An exec/attach/port-forward service, with a local or an in-process backend.

Try it (two terminals):

    python examples/exec_server.py --port 7070 --token s3cret
    python examples/exec_client.py --url http://127.0.0.1:7070 --token s3cret -- uname -a
    echo hello | python examples/exec_client.py --token s3cret -i -- tr a-z A-Z

`--backend inprocess` answers with Python functions instead of processes
(commands: `echo`, `upper`, `wc`, `exit N`): the way to build a sandbox,
a REPL or a test double. `--allow` restricts argv[0] for the local backend.
The server binds 127.0.0.1 and requires the token; it prints the bound port
(use `--port 0` for any free port).
"""

from __future__ import annotations

import argparse
import os
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


async def main() -> None:
    parser = argparse.ArgumentParser(description="muxstream exec service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--token", default=os.environ.get("MUXSTREAM_TOKEN"), required=False)
    parser.add_argument("--backend", choices=["local", "inprocess"], default="local")
    parser.add_argument("--allow", action="append", help="allowed argv[0] (repeatable)")
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or MUXSTREAM_TOKEN) is required")
    backend_cm = (
        FunctionBackend(toy_shell)
        if args.backend == "inprocess"
        else LocalBackend(attach_commands={"main": ["cat"]})
    )
    async with backend_cm as backend:
        typed_backend: ExecBackend = backend
        config = RemoteServerConfig(
            token=args.token, allowed_commands=args.allow, backend=typed_backend
        )
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: serve_remote(
                    config, args.port, host=args.host, task_status=task_status
                )
            )
            print(f"listening on {args.host}:{bound_port(listeners)}", flush=True)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(130)
