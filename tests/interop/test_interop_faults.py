"""Faults with a real Go peer: the spdystream process is killed (SIGKILL) in the
middle of a transfer. muxstream's blocked call must wake with
``trio.BrokenResourceError`` chained to a muxstream error, and leaving the session
must not hang.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import muxstream

TIMEOUT = 60


async def test_go_producer_killed_mid_transfer(spdypeer: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("producer", "-listen", "127.0.0.1:0",
                                "-bytes", str(1 << 40)) as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                stream = await session.accept()
                received = 0
                with pytest.raises(trio.BrokenResourceError) as info:
                    while chunk := await stream.receive_some():
                        received += len(chunk)
                        if received >= 4 << 20 and go.process.returncode is None:
                            go.process.kill()
                assert received >= 4 << 20
                assert isinstance(info.value.__cause__, muxstream.MuxstreamError), info.value
                with pytest.raises(trio.BrokenResourceError):
                    await session.ping()


async def test_go_consumer_killed_mid_transfer(spdypeer: Any) -> None:
    block = bytes(1 << 20)
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("consumer", "-listen", "127.0.0.1:0",
                                "-read-delay", "1ms", "-ping-interval", "50ms") as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                stream = await session.open_stream(headers={"streamtype": "data"})
                sent = 0
                with pytest.raises(trio.BrokenResourceError) as info:
                    while True:
                        await stream.send_all(block)
                        sent += len(block)
                        if sent == 8 << 20:
                            go.process.kill()
                assert isinstance(info.value.__cause__, muxstream.MuxstreamError), info.value
