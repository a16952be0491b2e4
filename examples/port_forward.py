"""Port-forwarding through a muxstream endpoint, as `kubectl port-forward` does it.

Try it:

    python examples/port_forward.py       # everything in one process, then exits

    # or against a running server, with the command-line tool:
    export MUXSTREAM_TOKEN=$(openssl rand -hex 16)
    muxstream serve &
    python -m http.server 8000 --bind 127.0.0.1 &
    muxstream port-forward 8080:8000
    curl http://127.0.0.1:8080/

Here: a "pod" service (a TCP upper-casing server on 127.0.0.1) sits behind
`serve_remote`; `port_forward` listens locally and carries each local TCP
connection as a pair of streams (data + error) in one session, over a
WebSocket tunnel (SPDY inside) or plain SPDY when the server refuses WebSocket.
"""

from __future__ import annotations

import sys

import trio

from muxstream.remote import (
    RemoteEndpoint,
    RemoteServerConfig,
    bound_port,
    port_forward,
    serve_remote,
)

TOKEN = "example-token-0123456789"


async def upper_service(stream: trio.SocketStream) -> None:
    """The service "in the pod": answers each connection in upper case."""
    async with stream:
        async for chunk in stream:
            await stream.send_all(bytes(chunk).upper())


async def main() -> int:
    async with trio.open_nursery() as nursery:
        pod_listeners = await nursery.start(trio.serve_tcp, upper_service, 0)
        pod_port = pod_listeners[0].socket.getsockname()[1]
        config = RemoteServerConfig(token=TOKEN, allowed_ports=[pod_port])
        server = await nursery.start(serve_remote, config, 0)
        endpoint = RemoteEndpoint(f"http://127.0.0.1:{bound_port(server)}", token=TOKEN)
        local = await nursery.start(port_forward, endpoint, "demo", pod_port)
        local_port = bound_port(local)
        print(f"forwarding 127.0.0.1:{local_port} -> pod port {pod_port}")

        ok = True
        for word in (b"hello", b"through", b"the tunnel"):  # a new connection each time
            conn = await trio.open_tcp_stream("127.0.0.1", local_port)
            async with conn:
                await conn.send_all(word)
                await conn.send_eof()
                reply = b""
                async for chunk in conn:
                    reply += chunk
            print(f"  sent {word!r:14} got {reply!r}")
            ok = ok and reply == word.upper()
        nursery.cancel_scope.cancel()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
