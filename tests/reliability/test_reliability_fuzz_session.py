"""Fuzz the session state machine: frame sequences from a raw peer against a live Session.

Hypothesis builds sequences of SPDY frames (valid, out of order, for unknown
streams, with hostile values) and garbage, cut at arbitrary points, and a raw
peer writes them over memory streams to a live Session whose application
accepts, echoes, opens streams and pings at the same time. Properties:

* never a hang: the whole run, including the close, finishes within a
  (virtual, autojump) deadline;
* user calls raise only the documented types (``trio.BrokenResourceError``,
  ``trio.ClosedResourceError``, muxstream's own errors);
* the session's recorded failure, if any, is a protocol or muxstream error, never
  a bug (KeyError, AssertionError, ...) caught by the background tasks.

``MUXSTREAM_FUZZ_EXAMPLES`` sets the number of sequences (CI: 150).
"""

from __future__ import annotations

import os
import struct

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

import muxstream
from muxstream import SERVER, Session
from muxstream.protocol import HeaderCompressor, Headers
from muxstream.testing import start_session

EXAMPLES = int(os.environ.get("MUXSTREAM_FUZZ_EXAMPLES", "150"))

USER_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, muxstream.MuxstreamError,
               trio.TooSlowError)

stream_ids = st.integers(0, 9) | st.sampled_from([0x7FFFFFFF, 2**31 - 2])
u32 = st.integers(0, 5) | st.sampled_from([0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 65536])
flags = st.sampled_from([0, 1, 2, 3, 0xFF])


def _control(ftype: int, fl: int, payload: bytes) -> bytes:
    return struct.pack(">II", 0x80030000 | ftype, (fl << 24) | len(payload)) + payload


# Each action is a function of the peer's header compressor (so header blocks
# stay decodable in order) returning the bytes to write.
actions = st.one_of(
    st.builds(lambda sid, fl, n: lambda c: _control(1, fl, struct.pack(">IIBB", sid, 0, 0, 0)
                                                    + c.compress(Headers({"n": str(n)}))),
              stream_ids, flags, st.integers(0, 3)),
    st.builds(lambda sid, fl: lambda c: _control(2, fl, struct.pack(">I", sid)
                                                 + c.compress(Headers())), stream_ids, flags),
    st.builds(lambda sid, fl: lambda c: _control(8, fl, struct.pack(">I", sid)
                                                 + c.compress(Headers({"x": "y"}))),
              stream_ids, flags),
    st.builds(lambda sid, fl, n: lambda c: struct.pack(">II", sid, (fl << 24) | n) + bytes(n),
              stream_ids, flags, st.integers(0, 70000)),
    st.builds(lambda sid, status: lambda c: _control(3, 0, struct.pack(">II", sid, status)),
              stream_ids, u32),
    st.builds(lambda key, value: lambda c: _control(
        4, 0, struct.pack(">I", 1) + struct.pack(">II", key, value)),
        st.sampled_from([4, 7, 1]), u32),
    st.builds(lambda pid: lambda c: _control(6, 0, struct.pack(">I", pid)), u32),
    st.builds(lambda sid, status: lambda c: _control(7, 0, struct.pack(">II", sid, status)),
              stream_ids, u32),
    st.builds(lambda sid, delta: lambda c: _control(9, 0, struct.pack(">II", sid, delta)),
              stream_ids, u32),
    st.builds(lambda raw: lambda c: raw, st.binary(max_size=24)),
)


async def _app(session: Session) -> None:
    """A busy application: every call may only fail with a documented error."""

    async def echo(stream: muxstream.Stream) -> None:
        try:
            while data := await stream.receive_some():
                await stream.send_all(data)
            await stream.send_eof()
        except USER_ERRORS:
            pass

    async def accept_all(nursery: trio.Nursery) -> None:
        try:
            async for stream in session:
                nursery.start_soon(echo, stream)
        except USER_ERRORS:
            pass

    async def open_and_ping() -> None:
        for _ in range(3):
            try:
                stream = await session.open_stream({"k": "v"}, timeout=5)
                await stream.send_all(b"hello")
                await stream.aclose()
            except USER_ERRORS:
                pass
            try:
                await session.ping(timeout=5)
            except USER_ERRORS:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_all, nursery)
        nursery.start_soon(open_and_ping)


async def _run(script: list[bytes], cuts: list[int], eof: bool) -> None:
    a, b = trio.testing.memory_stream_pair()
    wire = b"".join(script)
    with trio.fail_after(600):  # virtual seconds: the autojump clock runs the timers
        async with trio.open_nursery() as nursery:
            session = start_session(nursery, a, role=SERVER, keepalive_interval=30,
                                    ping_timeout=10, close_timeout=20)

            async def peer() -> None:
                try:
                    pos = 0
                    for cut in [*sorted(set(cuts)), len(wire)]:
                        if cut > pos:
                            await b.send_all(wire[pos:cut])
                            pos = cut
                        await trio.sleep(0)
                    if eof:
                        await b.send_eof()
                    while await b.receive_some():
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            nursery.start_soon(peer)
            with trio.move_on_after(60):
                await _app(session)
            await session.aclose()
            assert session.closed
            await b.aclose()
    error = session.error
    assert error is None or isinstance(error, muxstream.MuxstreamError), repr(error)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    plan=st.lists(actions, max_size=25),
    cuts=st.lists(st.integers(0, 200_000), max_size=6),
    eof=st.booleans(),
)
def test_frame_sequences_never_hang_and_raise_only_typed_errors(
    plan: list[object], cuts: list[int], eof: bool,
) -> None:
    compressor = HeaderCompressor()
    script = [action(compressor) for action in plan]  # type: ignore[operator]
    trio.run(_run, script, cuts, eof, clock=trio.testing.MockClock(autojump_threshold=0))
