"""Bulk copy over one stream: the receiver checks the size and SHA-256.

Try it:

    python examples/bulk_copy.py                          # 256 MiB of generated data
    python examples/bulk_copy.py --size 1G
    python examples/bulk_copy.py --file /path/to/big.iso  # a real file

Both ends run here, in two processes over loopback TCP: this process sends and
a child process (this file with `--receive`) receives, hashes and answers with
`{"bytes": n, "sha256": ...}`. The sender closes its session as soon as its
last send returns -- the graceful close makes sure every byte still arrives.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import trio

import muxstream

CHUNK = 1 << 20


async def receive() -> None:
    """The receiving side: answer each stream with its byte count and digest."""

    async def handler(session: muxstream.Session) -> None:
        async for stream in session:
            digest, count = hashlib.sha256(), 0
            async for chunk in stream:
                digest.update(chunk)
                count += len(chunk)
            answer = {"bytes": count, "sha256": digest.hexdigest()}
            await stream.send_all(json.dumps(answer).encode())
            await stream.send_eof()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: muxstream.serve_tcp(handler, 0, task_status=task_status)
        )
        print(listeners[0].socket.getsockname()[1], flush=True)  # tell the parent the port


def chunks(args: argparse.Namespace) -> Iterator[bytes]:
    """The data to send: the file's blocks, or random blocks in a non-repeating order."""
    if args.file:
        with open(args.file, "rb") as f:
            while block := f.read(CHUNK):
                yield block
        return
    blocks = [os.urandom(CHUNK) for _ in range(16)]
    sent = 0
    i = 0
    while sent < args.size:
        block = blocks[i % 16][: args.size - sent]
        yield block
        sent += len(block)
        i += 7


async def send(args: argparse.Namespace, port: int) -> int:
    total = os.path.getsize(args.file) if args.file else args.size
    digest, count = hashlib.sha256(), 0
    start = time.monotonic()
    async with muxstream.open_tcp_session("127.0.0.1", port) as session:
        stream = await session.open_stream(headers={"name": args.file or "generated"})
        for block in chunks(args):
            await stream.send_all(block)
            digest.update(block)
            count += len(block)
        await stream.send_eof()
        answer = json.loads(await stream.receive_all())
    elapsed = time.monotonic() - start
    ok = answer == {"bytes": count, "sha256": digest.hexdigest()}
    print(f"sent {count:,} of {total:,} bytes in {elapsed:.2f} s "
          f"({count / elapsed / 2**20:.0f} MiB/s); receiver got {answer['bytes']:,} bytes, "
          f"sha256 {'match' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=256 << 20)
    parser.add_argument("--file", help="send this file instead of generated data")
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(receive)
        return 0
    child = subprocess.Popen(
        [sys.executable, __file__, "--receive"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        return trio.run(send, args, port)
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    sys.exit(main())
