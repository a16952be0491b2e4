"""Open many concurrent streams on one connection and check each echo.

Try it against examples/echo_server.py (or `muxstream serve`-less, on its own):

    python examples/echo_server.py --port 7001
    python examples/echo_client.py --port 7001 --streams 100 --size 65536

Every stream sends its own bytes, half-closes (FIN), reads the echo until the
server's FIN and compares. Exit status 0 when every stream came back intact.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

import muxstream


async def one_stream(session: muxstream.Session, index: int, size: int) -> bool:
    payload = os.urandom(size)
    stream = await session.open_stream(headers={"x-stream-index": str(index)})
    async with stream:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()  # FIN: "I am done sending"

            nursery.start_soon(send)  # send and receive at once: windows stay open
            echoed = await stream.receive_all()
    return echoed == payload


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--size", type=int, default=16384, help="bytes per stream")
    args = parser.parse_args()
    results: list[bool] = []
    async with muxstream.open_tcp_session(args.host, args.port) as session:
        rtt = await session.ping()
        print(f"connected; ping {rtt * 1000:.2f} ms")
        start = trio.current_time()

        async def run(i: int) -> None:
            results.append(await one_stream(session, i, args.size))

        async with trio.open_nursery() as nursery:
            for i in range(args.streams):
                nursery.start_soon(run, i)
        elapsed = trio.current_time() - start
    # Leaving the block closed the session gracefully: GOAWAY, FIN, drain.
    ok = sum(results)
    print(f"{ok}/{args.streams} streams echoed intact in {elapsed:.3f} s")
    return 0 if ok == args.streams else 1


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except* OSError as failed:  # nothing listens there: one line, not a traceback
        reason = failed.exceptions[0]
        print(f"echo_client: {reason} (is examples/echo_server.py running there?)",
              file=sys.stderr)
        sys.exit(1)
