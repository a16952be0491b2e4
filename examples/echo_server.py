"""An echo server: every stream a client opens is echoed back, many at once.

Try it (two terminals):

    python examples/echo_server.py --port 7001
    python examples/echo_client.py --port 7001 --streams 50

Each connection is one muxstream session; each stream is echoed by its own task
until the client's FIN, then answered with our FIN. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import sys

import trio

import muxstream


async def echo_stream(stream: muxstream.Stream) -> None:
    """Send back everything received; FIN after the peer's FIN."""
    async with stream:
        try:
            async for chunk in stream:
                await stream.send_all(chunk)
            await stream.send_eof()
        except trio.BrokenResourceError as exc:
            print(f"stream {stream.stream_id}: {exc}", file=sys.stderr)


async def handle_session(session: muxstream.Session) -> None:
    """Serve one connection: a task per stream, until the client goes away."""
    async with trio.open_nursery() as nursery:
        async for stream in session:  # ends when the peer closes the session
            nursery.start_soon(echo_stream, stream)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001, help="0 picks a free port")
    args = parser.parse_args()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: muxstream.serve_tcp(
                handle_session, args.port, host=args.host, task_status=task_status
            )
        )
        port = listeners[0].socket.getsockname()[1]
        print(f"echo server listening on {args.host}:{port}", flush=True)


if __name__ == "__main__":
    try:
        trio.run(main)
    except* KeyboardInterrupt:  # Ctrl-C, possibly inside trio's exception groups
        pass
