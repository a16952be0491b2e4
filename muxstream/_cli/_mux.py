"""Client commands over a muxstream session: echo, ping, bench, demo."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._session import Session
from ._common import (
    ENV_TOKEN,
    INTERRUPT,
    Address,
    CliError,
    Progress,
    client_ssl_context,
    emit_json,
    fmt_bytes,
    percentile,
)
from ._service import BulkResult, bulk_send, connect, echo

#: seconds between pings while the bulk copy runs (demo and bench).
PING_UNDER_LOAD_INTERVAL = 0.02
#: random bytes in the token of a spawned server (32 characters of base64url).
SPAWNED_TOKEN_BYTES = 24


@asynccontextmanager
async def client_session(args: argparse.Namespace, **options: Any) -> AsyncIterator[Session]:
    async with connect(
        args.address,
        token=args.token,
        ssl_context=client_ssl_context(args),
        transport=getattr(args, "transport", "tcp"),
        timeout=args.timeout,
        **options,
    ) as session:
        yield session


# --- echo ---------------------------------------------------------------------------


async def echo_main(args: argparse.Namespace) -> int:
    text = " ".join(args.message) if args.message else "hello, muxstream"
    results: list[tuple[int, bytes, bytes]] = []
    async with client_session(args) as session:

        async def one(i: int) -> None:
            message = f"{text} [{i}]\n".encode() if args.streams > 1 else f"{text}\n".encode()
            results.append((i, message, await echo(session, args.token, message)))

        async with trio.open_nursery() as nursery:
            for i in range(1, args.streams + 1):
                nursery.start_soon(one, i)
    results.sort()
    bad = [i for i, sent, got in results if sent != got]
    if args.json:
        emit_json({"streams": args.streams, "ok": not bad, "mismatched": bad})
    else:
        for _i, _sent, got in results:
            sys.stdout.write(got.decode("utf-8", "replace"))
        print(f"{args.streams} stream(s) echoed" + (f"; MISMATCH on {bad}" if bad else ", all OK"))
    return 1 if bad else 0


# --- ping ---------------------------------------------------------------------------


def rtt_summary(rtts: list[float]) -> dict[str, float]:
    ms = [r * 1000 for r in rtts]
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "min_ms": min(ms),
        "avg_ms": statistics.fmean(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


async def ping_main(args: argparse.Namespace) -> int:
    rtts: list[float] = []
    async with client_session(args) as session:
        for i in range(args.count):
            if i:
                await trio.sleep(args.interval)
            rtt = await session.ping(timeout=args.timeout)
            rtts.append(rtt)
            if not args.json:
                print(f"ping {i + 1}: rtt {rtt * 1000:.3f} ms", flush=True)
    summary = rtt_summary(rtts)
    if args.json:
        emit_json(summary)
    else:
        print(
            f"{summary['count']:.0f} pings to {args.address}: min {summary['min_ms']:.3f} / "
            f"avg {summary['avg_ms']:.3f} / p50 {summary['p50_ms']:.3f} / "
            f"p99 {summary['p99_ms']:.3f} / max {summary['max_ms']:.3f} ms"
        )
    return 0


# --- bulk with pings under load (bench and demo) ---------------------------------------


async def bulk_with_pings(
    session: Session, token: str | None, size: int, progress: Progress | None
) -> tuple[BulkResult, list[float]]:
    rtts: list[float] = []
    async with trio.open_nursery() as nursery:

        async def pinger() -> None:
            while True:
                await trio.sleep(PING_UNDER_LOAD_INTERVAL)
                rtts.append(await session.ping())

        nursery.start_soon(pinger)
        result = await bulk_send(
            session, token, size, progress=progress.update if progress else None
        )
        nursery.cancel_scope.cancel()
    if progress is not None:
        progress.finish()
    return result, rtts


@asynccontextmanager
async def spawned_server(token: str, close_timeout: float = 10.0) -> AsyncIterator[Address]:
    """Run ``python -m muxstream serve --address 127.0.0.1:0`` and yield its address.

    The token travels in the child's environment (``MUXSTREAM_TOKEN``), never on
    its command line: every local user can read a process's argv, only its owner
    its environment. On exit it is stopped with SIGINT (its graceful shutdown)
    and must exit 0.
    """
    argv = [
        sys.executable, "-m", "muxstream", "serve", "--address", "127.0.0.1:0",
        "--close-timeout", str(close_timeout),
    ]
    env = {**os.environ, ENV_TOKEN: token}
    # The server's own messages (its shutdown line, warnings) go to a file that is
    # shown only if something goes wrong: the demo's output stays readable.
    log = tempfile.TemporaryFile()
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=log, env=env
    )
    INTERRUPT.waiting_for = "stopping the server it started"
    try:
        assert process.stdout is not None
        banner = b""
        with trio.fail_after(30):
            while not (match := re.search(rb"listening on ([\d.]+):(\d+)", banner)):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise CliError("the demo server exited before it listened")
                banner += chunk
        yield Address(match.group(1).decode(), int(match.group(2)))
        process.send_signal(signal.SIGINT)
        with trio.fail_after(close_timeout + 5):
            code = await process.wait()
        if code != 0:
            raise CliError(f"the demo server exited with status {code}")
    except BaseException as exc:
        if not isinstance(exc, trio.Cancelled):  # Ctrl-C: nothing went wrong there
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
        raise
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        log.close()


def client_args(address: Address, token: str) -> argparse.Namespace:
    """The client options that reach a server :func:`spawned_server` started."""
    return argparse.Namespace(
        address=address, token=token, tls=False, cacert=None, timeout=10.0, transport="tcp"
    )


async def bench_main(args: argparse.Namespace) -> int:
    # An address the user gave names their server; only with none do we spawn one.
    spawn = args.spawn if args.spawn is not None else args.address_source == "default"
    if spawn:
        token = secrets.token_urlsafe(SPAWNED_TOKEN_BYTES)
        async with spawned_server(token) as address:
            return await _bench(args, client_args(address, token), spawned=True)
    return await _bench(args, args, spawned=False)


async def _bench(args: argparse.Namespace, conn: argparse.Namespace, *, spawned: bool) -> int:
    if not args.json:
        which = (f"a server spawned for this run on {conn.address} (give -a HOST:PORT to "
                 "measure yours)" if spawned else f"the server at {conn.address}")
        print(f"bench: measuring {which}", flush=True)
    progress = None if args.json else Progress("bench", args.size, mode="quiet")
    async with client_session(conn) as session:
        result, rtts = await bulk_with_pings(session, conn.token, args.size, progress)
    report: dict[str, Any] = {
        "server": str(conn.address),
        "server_spawned": spawned,
        "bytes": result.bytes_sent,
        "seconds": result.seconds,
        "mib_per_s": result.mib_per_s,
        "digest_match": result.ok,
        "ping_under_load": rtt_summary(rtts),
    }
    if args.json:
        emit_json(report)
    else:
        pings = report["ping_under_load"]
        print(
            f"{fmt_bytes(result.bytes_sent)} in {result.seconds:.2f} s = "
            f"{result.mib_per_s:.0f} MiB/s, digest {'match' if result.ok else 'MISMATCH'}; "
            f"ping under load p50 {pings.get('p50_ms', 0):.2f} ms, "
            f"p99 {pings.get('p99_ms', 0):.2f} ms ({pings['count']:.0f} pings)"
        )
    return 0 if result.ok else 1


# --- demo ---------------------------------------------------------------------------


async def demo_main(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(SPAWNED_TOKEN_BYTES)
    say = (lambda *a, **k: None) if args.json else print
    say(f"muxstream demo: server + client on loopback, {fmt_bytes(args.size)} bulk copy",
        flush=True)
    wall = time.monotonic()
    async with spawned_server(token) as address:
        say(f"  server      {address} (a separate process)", flush=True)
        conn = client_args(address, token)
        async with client_session(conn) as session:
            # Echo over several concurrent streams.
            messages = [f"stream {i}: hello over one connection\n".encode() for i in range(8)]
            echoed: list[bytes] = [b""] * len(messages)

            async def one(i: int) -> None:
                echoed[i] = await echo(session, token, messages[i])

            async with trio.open_nursery() as nursery:
                for i in range(len(messages)):
                    nursery.start_soon(one, i)
            echo_ok = echoed == messages
            say(f"  echo        {len(messages)} concurrent streams, "
                f"{'all echoed intact' if echo_ok else 'MISMATCH'}", flush=True)
            idle = [await session.ping() for _ in range(20)]
            progress = Progress("  bulk copy  ", args.size, mode="quiet" if args.json else "lines")
            result, rtts = await bulk_with_pings(session, token, args.size, progress)
            stats = session.statistics()
            close_start = time.monotonic()
        close_seconds = time.monotonic() - close_start  # GOAWAY, FIN, drain to EOF
    ok = result.ok and echo_ok
    loaded = rtt_summary(rtts)
    report: dict[str, Any] = {
        "ok": ok,
        "echo_streams": len(messages),
        "echo_ok": echo_ok,
        "bytes": result.bytes_sent,
        "bytes_received_by_server": result.remote_bytes,
        "seconds": result.seconds,
        "mib_per_s": result.mib_per_s,
        "sha256_local": result.local_sha256,
        "sha256_remote": result.remote_sha256,
        "digest_match": result.ok,
        "ping_idle": rtt_summary(idle),
        "ping_under_load": loaded,
        "graceful_close_seconds": close_seconds,
        "streams_opened": stats.streams_opened,
        "wall_seconds": time.monotonic() - wall,
    }
    if args.json:
        emit_json(report)
        return 0 if ok else 1
    print("summary")
    print(f"  bytes       {result.bytes_sent:,} sent, "
          f"{result.remote_bytes:,} received by the server")
    print(f"  throughput  {result.mib_per_s:.0f} MiB/s ({result.seconds:.2f} s, one stream)")
    print(f"  sha256      {result.local_sha256[:16]}... "
          f"{'match' if result.ok else 'MISMATCH'}")
    print(f"  ping        idle p50 {report['ping_idle']['p50_ms']:.2f} ms; under load "
          f"p50 {loaded.get('p50_ms', 0):.2f} ms, p99 {loaded.get('p99_ms', 0):.2f} ms "
          f"({loaded['count']:.0f} pings)")
    print(f"  close       graceful (GOAWAY, FIN, drain) in {close_seconds * 1000:.0f} ms; "
          "server stopped with SIGINT, exit 0")
    print("demo OK" if ok else "demo FAILED: data did not arrive intact")
    return 0 if ok else 1

