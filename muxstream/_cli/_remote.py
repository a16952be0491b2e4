"""Client commands over the exec/port-forward endpoint: exec, attach, cp, port-forward.

They use :mod:`muxstream.remote` (the kubectl-compatible client): WebSocket first,
then SPDY, exactly as kubectl does, so they work against ``muxstream serve`` and
against any Kubernetes-style endpoint that accepts a bearer token.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator

import trio

from .._failures import GONE
from ..remote import (
    PortForwarder,
    RemoteEndpoint,
    RemoteProcess,
    open_port_forward,
    open_remote_process,
)
from ._common import (
    INTERRUPT,
    Address,
    CliError,
    client_ssl_context,
    emit_json,
    endpoint_url,
    listen_error,
    stdout_write,
)

#: bytes per read of our own stdin.
STDIN_CHUNK = 64 * 1024


def make_endpoint(args: argparse.Namespace) -> RemoteEndpoint:
    return RemoteEndpoint(
        endpoint_url(args),
        token=args.token,
        ssl_context=client_ssl_context(args),
        transport=getattr(args, "transport", "auto"),
        connect_timeout=args.timeout,
    )


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[bool]:
    """Put stdin's terminal in raw mode (restored on exit); yields whether it did."""
    if not enabled or not os.isatty(0):
        yield False
        return
    saved = termios.tcgetattr(0)

    def restore() -> None:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)

    INTERRUPT.on_hard_exit.append(restore)  # a second Ctrl-C skips the finally below
    try:
        tty.setraw(0)
        yield True
    finally:
        restore()
        INTERRUPT.on_hard_exit.remove(restore)


async def _pump_stdin(sink: trio.abc.SendStream) -> None:
    # A thread does the blocking read: trio's FdStream would make fd 0 non-blocking,
    # which the shell we return to shares.
    with contextlib.suppress(*GONE):
        while chunk := await trio.to_thread.run_sync(
            os.read, 0, STDIN_CHUNK, abandon_on_cancel=True
        ):
            await sink.send_all(chunk)
    await sink.aclose()  # EOF for the remote command


async def _pump_out(source: trio.abc.ReceiveStream | None, fd: int) -> None:
    if source is None:
        return
    async for chunk in source:
        if fd == 1:
            stdout_write(chunk)
        else:
            os.write(fd, chunk)


async def _follow_window(process: RemoteProcess) -> None:
    """Send the terminal size now and on every SIGWINCH."""
    with trio.open_signal_receiver(signal.SIGWINCH) as signals:
        while True:
            with contextlib.suppress(OSError):
                size = os.get_terminal_size(1 if os.isatty(1) else 0)
                with contextlib.suppress(*GONE):
                    await process.resize(size.columns, size.lines)
            await signals.__anext__()


async def interactive(args: argparse.Namespace, *, attach: bool) -> int:
    endpoint = make_endpoint(args)
    use_tty = args.tty and os.isatty(0)
    if args.tty and not use_tty:
        print("muxstream: stdin is not a terminal; running without a TTY", file=sys.stderr)
    with raw_terminal(use_tty):
        async with open_remote_process(
            endpoint,
            args.pod,
            [] if attach else args.command,
            container=args.container or ("main" if attach else None),
            stdin=args.stdin or use_tty,
            tty=use_tty,
            attach=attach,
        ) as process:
            return await drive(process, use_tty)


async def drive(process: RemoteProcess, use_tty: bool) -> int:
    """Connect ``process`` to our stdin/stdout/stderr (and window size with a
    TTY) until its output ends; returns its exit code."""
    async with trio.open_nursery() as nursery:
        if process.stdin is not None:
            nursery.start_soon(_pump_stdin, process.stdin)
        if use_tty:
            nursery.start_soon(_follow_window, process)
        async with trio.open_nursery() as outputs:
            outputs.start_soon(_pump_out, process.stdout, 1)
            outputs.start_soon(_pump_out, process.stderr, 2)
        nursery.cancel_scope.cancel()  # output ended: stop reading stdin
    return await process.wait()


async def exec_main(args: argparse.Namespace) -> int:
    return await interactive(args, attach=False)


async def attach_main(args: argparse.Namespace) -> int:
    return await interactive(args, attach=True)


# --- port-forward ---------------------------------------------------------------------


def parse_port_mapping(text: str) -> tuple[int, int]:
    """``8080:80`` -> (8080, 80); ``80`` -> (80, 80); ``:80`` -> (0, 80)."""
    local, sep, remote = text.rpartition(":")
    try:
        remote_port = int(remote)
        local_port = (int(local) if local else 0) if sep else remote_port
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port mapping {text!r} (try 8080:80)") from None
    if not (0 <= local_port <= 65535 and 0 < remote_port <= 65535):
        raise argparse.ArgumentTypeError(f"bad port mapping {text!r}")
    return local_port, remote_port


async def port_forward_main(args: argparse.Namespace) -> int:
    endpoint = make_endpoint(args)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_port_forward(endpoint, args.pod) as forwarder:
            await serve_ports(forwarder, args.ports, args.bind, args.json, signals)
    return 0


async def _until_the_server_is_gone(forwarder: PortForwarder) -> None:
    """Wait for the end of the port-forward session; then raise CliError."""
    from ._explain import describe

    try:
        async for stream in forwarder.session:  # the server opens none: this waits
            stream.reset()
        fact = "the server closed the session"
    except trio.BrokenResourceError as exc:
        fact = describe(exc) or str(exc)
    raise CliError(f"lost the connection to pod {forwarder.pod}: {fact}")


async def serve_ports(
    forwarder: PortForwarder,
    ports: list[tuple[int, int]],
    bind: str,
    json_lines: bool,
    signals: AsyncIterator[int],
) -> None:
    """Listen for every (local, remote) pair, print where, serve until a signal.

    Raises CliError when a local port cannot be bound (naming it) and when the
    server goes away: kubectl exits then too, where a forwarder that kept
    listening would only drop every new connection.
    """
    async with trio.open_nursery() as nursery:
        for local_port, remote_port in ports:
            try:
                listeners = await nursery.start(
                    lambda task_status, lp=local_port, rp=remote_port: forwarder.serve(
                        rp, lp, host=bind, task_status=task_status
                    )
                )
            except OSError as exc:
                raise listen_error(exc, Address(bind, local_port), "pick another local "
                                   "port, or :REMOTE for a free one") from None
            bound = listeners[0].socket.getsockname()[1]
            if json_lines:
                emit_json({"local": f"{bind}:{bound}", "remote_port": remote_port})
            else:
                print(f"Forwarding from {bind}:{bound} -> {remote_port}", flush=True)
        nursery.start_soon(_until_the_server_is_gone, forwarder)
        async for _ in signals:
            nursery.cancel_scope.cancel()
            break
