"""``open_stream(wait_reply=False)`` against a Go spdystream server.

spdystream drops DATA on a stream it has not replied to yet, but it runs the
stream handler on its frame-reading goroutine before it reads the next frame: a
handler that calls ``SendReply`` right away (spdystream's own mirror handler,
Kubernetes' handler, our Go echo peer) has replied before the DATA behind the
SYN_STREAM is read. This test pins that fact with many short streams.
"""

from __future__ import annotations

import hashlib
from typing import Any

import trio

import muxstream

TIMEOUT = 120


async def test_streams_opened_without_waiting_are_echoed_by_go_server(spdypeer: Any) -> None:
    echoes: dict[int, bytes] = {}
    replies: dict[int, muxstream.Headers] = {}

    async def one_stream(session: muxstream.Session, i: int) -> None:
        data = hashlib.sha256(str(i).encode()).digest() * (1 + i % 50)
        stream = await session.open_stream({"requestid": str(i)}, wait_reply=False)
        await stream.send_all(data)  # right behind SYN_STREAM, before any reply
        await stream.send_eof()
        echoes[i] = await stream.receive_all()
        replies[i] = await stream.wait_reply()
        await stream.aclose()

    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("echo-server") as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                for batch in range(4):
                    async with trio.open_nursery() as nursery:
                        for i in range(batch * 50, batch * 50 + 50):
                            nursery.start_soon(one_stream, session, i)
            await go.read_event("session_closed")
            await go.close_stdin()
            await go.wait()
    for i in range(200):
        assert echoes[i] == hashlib.sha256(str(i).encode()).digest() * (1 + i % 50)
        assert replies[i]["x-reply"] == "ok"
