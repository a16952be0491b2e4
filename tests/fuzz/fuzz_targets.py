"""Fuzz targets for the parsers that face the network, and an atheris runner.

Each target takes arbitrary bytes and may raise only the documented error types;
anything else (or a hang, caught by the virtual-clock deadline) is a bug.

* ``frames``: the frame decoder and connection state machine (``Connection.receive_data``),
  fed in chunks whose size the first byte picks;
* ``headers``: the header-block decompressor (zlib with the SPDY dictionary) and parser;
* ``http_server``: ``handle_http_connection`` answering a client that sends the input
  (plain requests, HTTP Upgrade and WebSocket handshakes);
* ``upgrade_client`` / ``websocket_client``: the client handshakes reading the input
  as the server's answer.

Run one under atheris (coverage-guided)::

    .venv/bin/python tests/fuzz/fuzz_targets.py frames -max_total_time=600 \\
        /tmp/fuzz-frames tests/fuzz/corpus/frames

(the first directory receives new inputs; the seed corpus is only read). Without a
target name it lists them. tests/fuzz/test_fuzz_targets.py replays the corpus and
runs each target for a bounded time in CI.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

_instrument: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
if __name__ == "__main__" and len(sys.argv) > 1:
    import atheris

    # Coverage only for muxstream's own code (instrumenting trio too is far slower).
    _instrument = atheris.instrument_imports(include=["muxstream"])

with _instrument:
    import trio
    import trio.testing

    from muxstream.protocol import (
        Connection,
        HeaderDecompressor,
        RemoteProtocolError,
        Role,
        decode_header_block,
    )
    from muxstream.transport import (
        HTTPRequest,
        TransportError,
        handle_http_connection,
        wrap_upgrade_client,
        wrap_websocket_client,
    )


def frames(data: bytes) -> None:
    if not data:
        return
    step = max(1, data[0])
    body = data[1:]
    conn = Connection(Role.SERVER)
    conn.data_to_send()
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        while True:
            try:
                conn.receive_data(chunk)
            except RemoteProtocolError as exc:
                if exc.fatal:
                    conn.data_to_send()
                    return
                chunk = b""
                continue
            break
        conn.data_to_send()


def headers(data: bytes) -> None:
    try:
        HeaderDecompressor(max_size=64 * 1024).decompress(data)
    except RemoteProtocolError as exc:
        assert exc.fatal
    try:
        decode_header_block(data)
    except RemoteProtocolError as exc:
        assert exc.fatal


async def _app(request: HTTPRequest) -> None:
    if request.is_websocket:
        ws = await request.accept_websocket()
        await ws.aclose()
    elif request.is_upgrade:
        stream = await request.accept_upgrade()
        await stream.aclose()
    else:
        await request.respond(200, body=b"ok")


async def _http_server(data: bytes) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: handle_http_connection(server, _app, handshake_timeout=10))
            try:
                await client.send_all(data)
                await client.send_eof()
                while await client.receive_some():
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    await client.aclose()


def http_server(data: bytes) -> None:
    trio.run(_http_server, data, clock=trio.testing.MockClock(autojump_threshold=0))


async def _client(data: bytes, websocket: bool) -> None:
    client, server = trio.testing.memory_stream_pair()

    async def scripted_server() -> None:
        try:
            await server.receive_some()  # the request
            await server.send_all(data)
            await server.send_eof()
            while await server.receive_some():
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scripted_server)
            try:
                if websocket:
                    ws = await wrap_websocket_client(client, "/ws", host="h",
                                                     subprotocols=["v5.channel.k8s.io"],
                                                     handshake_timeout=10)
                    with trio.move_on_after(10):
                        while await ws.receive_some():
                            pass
                    await ws.aclose()
                else:
                    stream, _response = await wrap_upgrade_client(
                        client, "/up", host="h", protocols=["v4.channel.k8s.io"],
                        handshake_timeout=10)
                    with trio.move_on_after(10):
                        while await stream.receive_some():
                            pass
                    await stream.aclose()
            except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()
    await client.aclose()


def upgrade_client(data: bytes) -> None:
    trio.run(_client, data, False, clock=trio.testing.MockClock(autojump_threshold=0))


def websocket_client(data: bytes) -> None:
    trio.run(_client, data, True, clock=trio.testing.MockClock(autojump_threshold=0))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames,
    "headers": headers,
    "http_server": http_server,
    "upgrade_client": upgrade_client,
    "websocket_client": websocket_client,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print("targets:", ", ".join(TARGETS))
        sys.exit(2)
    import atheris

    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
