"""RST_STREAM across the implementations: a reset in either direction ends only
its stream, with the error trio's vocabulary prescribes, and the session goes on.

spdystream keeps writing DATA on a stream after it received RST_STREAM (its
Stream.Write does not check), so muxstream must drop DATA for a stream it reset
without breaking the session.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
import trio

import muxstream

TIMEOUT = 60


async def echo_round_trip(session: muxstream.Session, size: int) -> None:
    """One more stream through the same session still echoes correctly."""
    data = random.Random(size).randbytes(size)
    stream = await session.open_stream(headers={"streamtype": "check"})
    received = bytearray()

    async def reader() -> None:
        while chunk := await stream.receive_some():
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await stream.send_all(data)
        await stream.send_eof()
    await stream.aclose()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


async def test_reset_by_spdystream_breaks_only_that_stream(spdypeer: Any) -> None:
    limit = 100_000
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("echo-server") as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                stream = await session.open_stream(headers={"x-reset-after": str(limit)})
                received = 0

                async def sender() -> None:
                    data = bytes(64 << 10)
                    try:
                        for _ in range(64):
                            await stream.send_all(data)
                    except trio.BrokenResourceError:
                        pass  # the reset may arrive while we still send

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender)
                    with pytest.raises(trio.BrokenResourceError) as info:
                        while chunk := await stream.receive_some():
                            received += len(chunk)
                assert isinstance(info.value.__cause__, muxstream.StreamResetError)
                assert received <= limit
                await stream.aclose()
                await echo_round_trip(session, 300_000)
                assert await session.ping() > 0
            report = await go.read_event("session_closed")
            await go.close_stdin()
            await go.wait()
    assert report["tap_error"] == ""
    assert report["received_frames"].get("RST_STREAM", 0) == 0


async def test_muxstream_reset_while_spdystream_still_sends(spdypeer: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("echo-server") as go:
            port = await go.listening_port()
            async with muxstream.open_tcp_session("127.0.0.1", port) as session:
                stream = await session.open_stream(headers={"streamtype": "doomed"})
                # Fill the echo pipeline: spdystream echoes each 32 KiB read at once.
                await stream.send_all(bytes(4 << 20))
                assert await stream.receive_some()
                stream.reset()
                with pytest.raises(trio.ClosedResourceError):
                    await stream.receive_some()
                # The echo goroutine keeps writing DATA for the reset stream for a
                # while; the session must shrug it off.
                await echo_round_trip(session, 1 << 20)
                assert await session.ping() > 0
            report = await go.read_event("session_closed")
            await go.close_stdin()
            await go.wait()
    assert report["tap_error"] == ""
    assert report["received_frames"]["RST_STREAM"] == 1
    doomed = [s for s in report["streams"] if s["headers"].get("streamtype") == ["doomed"]]
    assert len(doomed) == 1
    # spdystream's echo of the reset stream ends with an error (its FIN is refused).
    assert doomed[0].get("error", "") != ""
