"""A muxstream session inside a WebSocket: what to use behind an HTTP proxy.

Try it:

    python examples/websocket_echo.py                 # server and client in one process
    python examples/websocket_echo.py --serve --port 8081     # then connect from elsewhere:
    muxstream echo --transport websocket -a 127.0.0.1:8081 hi

The path, `/muxstream`, and the WebSocket subprotocol, `muxstream`, are the ones
`muxstream serve` and the command line use, and the `hello` stream the command
line opens first is answered, so `muxstream echo` talks to this server too.

Proxies, load balancers and CDNs that only pass HTTP still pass WebSocket. The
server is `muxstream.transport.serve_http`: it answers plain HTTP requests and
upgrades `/muxstream` to a WebSocket; the session runs over the WebSocket's binary
messages exactly as over TCP (every stream, window and close rule holds). The
client side is `open_websocket_stream` + `open_session`.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

import muxstream
from muxstream.transport import HTTPRequest, open_websocket_stream, serve_http

PATH = "/muxstream"  # as `muxstream serve`
SUBPROTOCOL = "muxstream"  # what `muxstream echo --transport websocket` offers


async def app(request: HTTPRequest) -> None:
    """Upgrade `/muxstream` to a WebSocket carrying a session; anything else: 404."""
    if request.path != PATH or not request.is_websocket:
        await request.respond(404, [("content-type", "text/plain")],
                              f"try a WebSocket on {PATH}\n".encode())
        return
    # A client that offers subprotocols needs one chosen; ours offers none.
    websocket = await request.accept_websocket(request.negotiate_subprotocol([SUBPROTOCOL]))
    async with muxstream.open_session(websocket, role=muxstream.SERVER) as session:
        async with trio.open_nursery() as nursery:
            async for stream in session:
                nursery.start_soon(echo, stream)


async def echo(stream: muxstream.Stream) -> None:
    async with stream:
        if stream.headers.get("service") == "hello":  # the command line's first stream
            await stream.send_all(json.dumps({"server": "websocket_echo example"}).encode())
            await stream.send_eof()
            return
        async for chunk in stream:
            await stream.send_all(chunk)
        await stream.send_eof()


async def client(port: int, streams: int) -> int:
    websocket = await open_websocket_stream("127.0.0.1", port, PATH)
    async with muxstream.open_session(websocket, role=muxstream.CLIENT) as session:
        replies: dict[int, bytes] = {}

        async def one(i: int) -> None:
            stream = await session.open_stream()
            async with stream:
                await stream.send_all(f"message {i} through a WebSocket".encode())
                await stream.send_eof()
                replies[i] = await stream.receive_all()

        async with trio.open_nursery() as nursery:
            for i in range(streams):
                nursery.start_soon(one, i)
        print(f"ping over the WebSocket: {await session.ping() * 1000:.2f} ms")
    ok = all(replies[i] == f"message {i} through a WebSocket".encode() for i in range(streams))
    print(f"{len(replies)} streams over one WebSocket: {'all echoed' if ok else 'MISMATCH'}")
    return 0 if ok else 1


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="only serve (until Ctrl-C)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--streams", type=int, default=10)
    args = parser.parse_args()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_http(app, args.port, task_status=task_status)
        )
        port = listeners[0].socket.getsockname()[1]
        print(f"serving WebSocket sessions on ws://127.0.0.1:{port}{PATH}", flush=True)
        if args.serve:
            await trio.sleep_forever()
        code = await client(port, args.streams)
        nursery.cancel_scope.cancel()
    return code


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except* KeyboardInterrupt:  # Ctrl-C, possibly inside trio's exception groups
        pass
