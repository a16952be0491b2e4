"""Run a command on a muxstream exec service (or any Kubernetes-style endpoint).

Try it against examples/exec_server.py:

    export MUXSTREAM_TOKEN=...   # the server's token (--token works too, but other
                                 # local users can read a command line)
    python examples/exec_client.py --url http://127.0.0.1:7070 -- ls -l /
    echo hi | python examples/exec_client.py --url http://127.0.0.1:7070 -i -- cat
    python examples/exec_client.py --url http://127.0.0.1:7070 --transport spdy -- id

The remote exit code becomes this program's exit code; stdout and stderr are
streamed as they arrive. `--transport` forces WebSocket or SPDY (default:
WebSocket first, then SPDY, like kubectl).
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

from muxstream.remote import RemoteEndpoint, RemoteError, open_remote_process


async def pump_out(source: trio.abc.ReceiveStream | None, fd: int) -> None:
    if source is None:
        return
    async for chunk in source:
        os.write(fd, chunk)


async def pump_in(sink: trio.abc.SendStream | None) -> None:
    if sink is None:
        return
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        async for chunk in stdin:
            await sink.send_all(chunk)
    await sink.aclose()  # EOF for the remote command


async def main() -> int:
    parser = argparse.ArgumentParser(description="run a remote command")
    parser.add_argument("--url", default="http://127.0.0.1:7070")
    parser.add_argument("--token", default=os.environ.get("MUXSTREAM_TOKEN"))
    parser.add_argument("--pod", default="demo")
    parser.add_argument("--transport", choices=["auto", "websocket", "spdy"], default="auto")
    parser.add_argument("-i", "--stdin", action="store_true", help="send our stdin")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    endpoint = RemoteEndpoint(args.url, token=args.token, transport=args.transport)
    try:
        async with open_remote_process(
            endpoint, args.pod, args.command, stdin=args.stdin
        ) as process:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump_in, process.stdin)
                async with trio.open_nursery() as outputs:
                    outputs.start_soon(pump_out, process.stdout, 1)
                    outputs.start_soon(pump_out, process.stderr, 2)
                nursery.cancel_scope.cancel()  # output is done: stop reading our stdin
            return await process.wait()
    except RemoteError as exc:
        print(f"exec_client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # nothing listens there: one line, not a traceback
        print(f"exec_client: cannot connect to {args.url}: {exc} "
              "(is examples/exec_server.py running there?)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
