"""Behaviours of Go spdystream that muxstream's session layer relies on, shown with
raw frames (muxstream.protocol encoders over a plain trio TCP stream) against the
real library. Each test pins one fact documented in docs/interop.md.
"""

from __future__ import annotations

from typing import Any

import trio

from muxstream.protocol import (
    DataFrame,
    Flag,
    GoAwayFrame,
    GoAwayStatus,
    Headers,
    PingFrame,
    SettingsEntry,
    SettingsFrame,
    SettingsId,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
)
from muxstream.testing import RawPeer

TIMEOUT = 30


async def test_spdystream_stops_reading_and_writing_at_goaway(spdypeer: Any) -> None:
    """At a GOAWAY spdystream's Serve loop stops reading (later frames are never
    seen), delivers what it had already queued, and its writer shuts (the stream's
    FIN cannot be sent any more); then it closes the socket. So muxstream must write
    GOAWAY only after every frame it wants delivered, and only once it expects
    nothing more from the peer."""
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("consumer", "-listen", "127.0.0.1:0", "-ping-interval", "0",
                                "-read-delay", "0") as go:
            port = await go.listening_port()
            raw = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            async with raw.transport:
                await raw.send(SynStreamFrame(1, Headers({"streamtype": "data"})),
                               DataFrame(1, b"before-goaway"))
                # Wait for the reply: a SYN_STREAM that arrives together with a GOAWAY
                # may never be answered, because the writer shuts first.
                reply = await raw.next_frame()
                assert isinstance(reply, SynReplyFrame) and reply.stream_id == 1
                await raw.send(GoAwayFrame(0, GoAwayStatus.OK),
                               DataFrame(1, b"after-goaway", Flag.FIN))
                frames = await raw.frames_until_eof()
            result = await go.read_event("done")
            await go.wait()
    assert result["bytes"] == len(b"before-goaway")
    assert result["read_error"] == ""
    assert result["peer_closed"] is True
    assert result["close_error"] != ""  # its FIN could not be written after the GOAWAY
    assert frames == []


async def test_spdystream_drops_data_that_precedes_its_syn_reply(spdypeer: Any) -> None:
    """DATA on a stream spdystream opened is discarded until its SYN_REPLY arrives,
    so muxstream must reply to an accepted stream before sending on it."""
    with trio.fail_after(TIMEOUT):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with spdypeer.run("client", "-connect", f"127.0.0.1:{port}", "-streams", "1",
                                "-size", "10", "-chunk", "10", "-timeout", "20s") as go:
            raw = RawPeer(await listeners[0].accept())
            for listener in listeners:
                await listener.aclose()
            async with raw.transport:
                while (frame := await raw.next_frame()) is not None:
                    if isinstance(frame, SynStreamFrame):
                        sid = frame.stream_id
                        await raw.send(DataFrame(sid, b"early"), SynReplyFrame(sid, Headers()))
                    elif isinstance(frame, DataFrame) and frame.flags & Flag.FIN:
                        await raw.send(DataFrame(frame.stream_id, b"late", Flag.FIN))
                    elif isinstance(frame, PingFrame):
                        await raw.send(frame)
                    elif isinstance(frame, GoAwayFrame):
                        break
            result = await go.read_event("done")
            await go.wait()
    (stream,) = result["streams"]
    assert stream["sent"] == 10
    assert stream["received"] == len(b"late")  # "early" was dropped
    assert stream.get("error", "") == ""
    assert result["ping_error"] == ""


async def test_spdystream_ignores_settings_and_window_update(spdypeer: Any) -> None:
    """SETTINGS and WINDOW_UPDATE (session and stream) neither break a spdystream
    session nor change what it delivers."""
    payload = bytes(range(256)) * 1024
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("consumer", "-listen", "127.0.0.1:0", "-ping-interval", "0",
                                "-read-delay", "0") as go:
            port = await go.listening_port()
            raw = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            async with raw.transport:
                await raw.send(
                    SettingsFrame((SettingsEntry(SettingsId.INITIAL_WINDOW_SIZE, 1 << 20),)),
                    WindowUpdateFrame(0, 1 << 30),
                    SynStreamFrame(1, Headers({"streamtype": "data"})),
                    WindowUpdateFrame(1, 1 << 20),
                    DataFrame(1, payload),
                    SettingsFrame((SettingsEntry(SettingsId.MAX_CONCURRENT_STREAMS, 10),)),
                    DataFrame(1, b"", Flag.FIN),
                )
                # Wait for spdystream's FIN on the stream, then close the session the
                # way a correct peer does: GOAWAY after everything else.
                while (frame := await raw.next_frame()) is not None:
                    if isinstance(frame, DataFrame) and frame.flags & Flag.FIN:
                        await raw.send(GoAwayFrame(0))
                        break
                await raw.frames_until_eof()
            result = await go.read_event("done")
            await go.wait()
    assert result["bytes"] == len(payload)
    assert result["tap_error"] == ""
    frames = result["received_frames"]
    assert frames["SETTINGS"] == 2 and frames["WINDOW_UPDATE"] == 2


async def test_spdystream_echoes_only_pings_of_the_other_parity(spdypeer: Any) -> None:
    """A spdystream server echoes odd (client) ping ids and treats even ones as
    answers to its own pings: nothing comes back for them."""
    # spdystream hands pings to its 5 frame workers round-robin, each worker in
    # order: ping 2 and ping 9 share a worker, so once 9 is echoed, 2 was handled.
    sent = [2, 1, 3, 5, 7, 9]
    with trio.fail_after(TIMEOUT):
        async with spdypeer.run("consumer", "-listen", "127.0.0.1:0", "-ping-interval", "0",
                                "-read-delay", "0") as go:
            port = await go.listening_port()
            raw = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            async with raw.transport:
                await raw.send(SynStreamFrame(1, Headers({"streamtype": "data"}), Flag.FIN),
                               *(PingFrame(i) for i in sent))
                echoed: list[int] = []
                while 9 not in echoed:
                    frame = await raw.next_frame()
                    assert frame is not None, "connection ended early"
                    if isinstance(frame, PingFrame):
                        echoed.append(frame.ping_id)
                await raw.transport.send_eof()  # ends the consumer's session
                rest = await raw.frames_until_eof()
            await go.read_event("done")
            await go.wait()
    echoed += [f.ping_id for f in rest if isinstance(f, PingFrame)]
    assert sorted(echoed) == [1, 3, 5, 7, 9]
