"""One end of the shaped-link close test, run inside a network namespace.

    python _netns_peer.py consumer HOST PORT TOTAL   # prints "listening", then a JSON result
    python _netns_peer.py producer HOST PORT TOTAL   # prints the sha256 of what it sent
    python _netns_peer.py naive-producer HOST PORT TOTAL   # the same, closing naively

The consumer reads slowly and pings every few reads (as kubectl's clients do);
the producer sends TOTAL bytes and closes its session right after the last
``send_all`` returns. The naive producer is the control: the same session and
the same close, except that where muxstream half-closes (FIN) and drains until
the peer's EOF, it closes the socket at once. Whatever the consumer sends after
that (PINGs, WINDOW_UPDATEs) reaches a closed socket, the kernel answers RST,
and the bytes still in flight are lost. Used by test_reliability_shaped.py.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import partial

import trio

import muxstream

CHUNK = 256 * 1024


def _payload() -> bytes:
    return hashlib.sha256(b"muxstream").digest() * (CHUNK // 32)


async def consumer(host: str, port: int, total: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    print("listening", flush=True)
    tcp = await listeners[0].accept()
    await listeners[0].aclose()
    digest = hashlib.sha256()
    received = 0
    error = None
    async with muxstream.open_session(tcp, role=muxstream.SERVER, keepalive_interval=None,
                                      close_timeout=60) as session:
        stream = await session.accept()
        reads = 0
        pinging = True
        try:
            while chunk := await stream.receive_some(16384):
                digest.update(chunk)
                received += len(chunk)
                reads += 1
                if pinging and reads % 8 == 0:
                    try:
                        await session.ping(timeout=30)
                    except trio.BrokenResourceError as exc:
                        if not isinstance(exc.__cause__, muxstream.SessionClosed
                                          | muxstream.SessionGoneAway):
                            raise
                        pinging = False  # the peer closed: nobody left to answer
        except (trio.BrokenResourceError, muxstream.PingTimeout) as exc:
            error = repr(exc)
    print(json.dumps({"received": received, "digest": digest.hexdigest(), "error": error}),
          flush=True)


async def producer(host: str, port: int, total: int, *, naive: bool = False) -> None:
    payload = _payload()
    digest = hashlib.sha256()
    async with muxstream.open_tcp_session(host, port, keepalive_interval=None,
                                          close_timeout=60) as session:
        if naive:
            _close_instead_of_fin(session.transport)
        stream = await session.open_stream({"streamtype": "data"})
        for _ in range(total // len(payload)):
            await stream.send_all(payload)
            digest.update(payload)
    print(digest.hexdigest(), flush=True)


def _close_instead_of_fin(transport: trio.abc.Stream) -> None:
    """Make the session's close naive: its writer flushes every frame and GOAWAY
    as usual, then calls ``send_eof``; here that closes the socket instead, so
    nothing is drained. (The session's reader then fails on the closed socket;
    the producer does not care, as a naive one would not.)"""
    assert isinstance(transport, trio.SocketStream)

    async def close_now() -> None:
        await transport.aclose()

    setattr(transport, "send_eof", close_now)  # noqa: B010 (mypy: no method assignment)


def main() -> None:
    role, host, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if role == "consumer":
        trio.run(consumer, host, port, total)
    else:
        trio.run(partial(producer, naive=role == "naive-producer"), host, port, total)


if __name__ == "__main__":
    main()
