"""Client commands over the exec/port-forward endpoint: exec, attach, cp, port-forward.

They use :mod:`muxstream.remote` (the kubectl-compatible client): WebSocket first,
then SPDY, exactly as kubectl does, so they work against ``muxstream serve`` and
against any Kubernetes-style endpoint that accepts a bearer token.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import posixpath
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import trio

from ..remote import (
    PortForwarder,
    RemoteEndpoint,
    RemoteProcess,
    copy_from_remote,
    copy_to_remote,
    open_port_forward,
    open_remote_process,
    run_remote,
)
from ._common import (
    INTERRUPT,
    Address,
    CliError,
    Progress,
    client_ssl_context,
    emit_json,
    endpoint_url,
    listen_error,
    stdout_write,
)

#: bytes per read of our own stdin.
STDIN_CHUNK = 64 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


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
    with contextlib.suppress(*_GONE):
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
                with contextlib.suppress(*_GONE):
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


# --- cp -----------------------------------------------------------------------------


def split_remote(spec: str, default_pod: str) -> tuple[str, str] | None:
    """``POD:PATH`` or ``:PATH`` -> (pod, path); a local path -> None.

    Like kubectl: a path that starts with ``/`` or ``.`` is local even with a colon.
    """
    if spec.startswith(("/", ".")) or ":" not in spec:
        return None
    pod, _, path = spec.partition(":")
    if not path:
        raise CliError(f"{spec!r}: the remote path is empty")
    return pod or default_pod, path


def local_digests(path: Path) -> dict[str, str]:
    """sha256 of every regular file under ``path``, keyed by path relative to it."""
    def digest(file: Path) -> str:
        h = hashlib.sha256()
        with file.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    if path.is_file():
        return {"": digest(path)}
    return {
        str(p.relative_to(path)): digest(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


async def remote_digests(endpoint: RemoteEndpoint, pod: str, path: str) -> dict[str, str]:
    """sha256 of every regular file under the remote ``path`` (runs find + sha256sum)."""
    result = await run_remote(
        endpoint, pod, ["find", path, "-type", "f", "-exec", "sha256sum", "{}", "+"], check=False
    )
    if result.returncode != 0:
        err = (result.stderr or b"").decode(errors="replace").strip()
        raise CliError(f"could not compute the remote digest ({err or result.returncode})")
    digests: dict[str, str] = {}
    root = path.rstrip("/")
    for line in (result.stdout or b"").decode(errors="replace").splitlines():
        value, _, name = line.partition("  ")
        relative = "" if name == root else posixpath.relpath(name, root)
        digests[relative] = value
    return digests


async def cp_main(args: argparse.Namespace) -> int:
    endpoint = make_endpoint(args)
    source, destination = split_remote(args.source, args.pod), split_remote(args.dest, args.pod)
    if (source is None) == (destination is None):
        raise CliError("exactly one of SOURCE and DEST must be remote (POD:PATH or :PATH)")
    progress = Progress("cp", None, mode="quiet")
    if destination is not None:
        pod, remote_path = destination
        local = Path(args.source)
        if not local.exists():
            raise CliError(f"{local}: no such file or directory")
        sent = await copy_to_remote(endpoint, pod, local, remote_path, progress=progress.update)
        progress.finish()
        moved = sent
        expected = local_digests(local)
        actual = {} if args.no_verify else await remote_digests(endpoint, pod, remote_path)
        direction = f"{local} -> {pod}:{remote_path}"
    else:
        assert source is not None
        pod, remote_path = source
        expected = {} if args.no_verify else await remote_digests(endpoint, pod, remote_path)
        local = Path(args.dest)
        moved = await copy_from_remote(endpoint, pod, remote_path, local, progress=progress.update)
        progress.finish()
        actual = {} if args.no_verify else local_digests(local)
        direction = f"{pod}:{remote_path} -> {local}"
    verified = not args.no_verify
    if verified and expected != actual:
        differing = sorted(set(expected) ^ set(actual) | {
            k for k in set(expected) & set(actual) if expected[k] != actual[k]})
        raise CliError(f"digest mismatch after copy ({len(differing)} file(s) differ: "
                       f"{', '.join(d or '.' for d in differing[:5])})")
    if args.json:
        emit_json({"copied": direction, "bytes": moved, "files": len(expected) or None,
                   "digest_verified": verified})
    elif os.isatty(2):
        status = "sha256 verified" if verified else "not verified"
        print(f"{direction}: {moved:,} bytes, {len(expected)} file(s), {status}", file=sys.stderr)
    return 0


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
