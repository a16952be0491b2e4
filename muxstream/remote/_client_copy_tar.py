"""Directory trees through exec and tar, as ``kubectl cp`` moves them.

To the remote side: ``tar -xmf - -C DIR`` with a tar stream on stdin. From the
remote side: ``tar cf - -C DIR NAME`` and a tar stream on stdout. The local
tar work runs in a thread (``tarfile`` is blocking) and talks to the trio side
through a small channel of chunks, so memory stays bounded for any size.
Extraction uses tarfile's ``data`` filter: no absolute paths, no ``..``, no
device files, no links outside the destination.
"""

from __future__ import annotations

import contextlib
import posixpath
import tarfile
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

from .._failures import GONE
from ._client_exec import RemoteProcess

#: ``progress(done_bytes, total_bytes_or_None)``, called as data moves.
ProgressCallback = Callable[[int, int | None], None]
#: Opens one remote command: ``open(argv, stdin=..., stdout=...)``.
ProcessOpener = Callable[..., AbstractAsyncContextManager[RemoteProcess]]
#: Bytes per tar block handed between the tar thread and trio.
CHUNK = 1024 * 1024
#: Bytes of a remote command's stderr kept for an error message.
STDERR_LIMIT = 64 * 1024


class _ChannelWriter:
    """A write-only file object (for tarfile, in a thread) feeding a trio channel."""

    def __init__(self, channel: trio.MemorySendChannel[bytes]) -> None:
        self._channel = channel

    def write(self, data: bytes) -> int:
        trio.from_thread.run(self._channel.send, bytes(data))
        return len(data)

    def close(self) -> None:
        trio.from_thread.run(self._channel.aclose)


class _ChannelReader:
    """A read-only file object (for tarfile, in a thread) draining a trio channel."""

    def __init__(self, channel: trio.MemoryReceiveChannel[bytes]) -> None:
        self._channel = channel
        self._pending = b""
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._pending) < size):
            try:
                self._pending += trio.from_thread.run(self._channel.receive)
            except trio.EndOfChannel:
                self._eof = True
        if size < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data


async def keep_stderr(source: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    """Read ``source`` to its end, keeping the first :data:`STDERR_LIMIT` bytes."""
    if source is not None:
        async for chunk in source:
            into.extend(chunk[: STDERR_LIMIT - len(into)])


async def _discard(source: trio.abc.ReceiveStream | None) -> None:
    if source is not None:
        async for _ in source:
            pass


async def send_tree(
    open_process: ProcessOpener,
    source: Path,
    arcname: str,
    remote_dir: str,
    *,
    total: int,
    progress: ProgressCallback | None,
) -> tuple[int, bytes]:
    """Stream ``source`` as a tar archive whose top entry is ``arcname`` into
    ``tar -xmf - -C remote_dir``. Returns (exit code, stderr).

    Raises ``trio.BrokenResourceError`` if the connection breaks.
    """
    send_channel, receive_channel = trio.open_memory_channel[bytes](4)

    def produce() -> None:
        writer = _ChannelWriter(send_channel)
        try:
            with tarfile.open(fileobj=writer, mode="w|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
                tar.add(str(source), arcname=arcname)
        finally:
            writer.close()

    stderr = bytearray()
    argv = ["tar", "-xmf", "-", "-C", remote_dir]
    async with open_process(argv, stdin=True) as process:
        assert process.stdin is not None
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard, process.stdout)
            nursery.start_soon(keep_stderr, process.stderr, stderr)

            async def run_producer() -> None:
                # If the sender below stopped (the connection broke), the
                # producer's next write fails instead of blocking forever.
                with contextlib.suppress(*GONE):
                    await trio.to_thread.run_sync(produce)

            nursery.start_soon(run_producer)
            sent = 0
            async with receive_channel:
                try:
                    async for chunk in receive_channel:
                        await process.stdin.send_all(chunk)
                        sent += len(chunk)
                        if progress is not None:
                            progress(min(sent, total), total)
                except GONE as exc:
                    failure = exc
            if failure is None:
                await process.stdin.aclose()
            else:
                nursery.cancel_scope.cancel()
        returncode = await process.wait()
    if failure is not None and returncode == 0:
        raise trio.BrokenResourceError("connection lost during the copy") from failure
    return returncode, bytes(stderr)


async def receive_tree(
    open_process: ProcessOpener,
    remote_dir: str,
    remote_name: str,
    destination: Path,
    *,
    progress: ProgressCallback | None,
) -> tuple[int, bytes]:
    """Run ``tar cf - -C remote_dir remote_name`` and extract the tree it sends
    as ``destination`` (the top entry renamed). Returns (exit code, stderr).

    Raises ``tarfile.TarError`` (e.g. ``FilterError``) for an unsafe or corrupt
    archive, ``trio.BrokenResourceError`` if the connection breaks.
    """
    send_channel, receive_channel = trio.open_memory_channel[bytes](4)

    def consume() -> None:
        reader = _ChannelReader(receive_channel)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    parts = member.name.split("/", 1)
                    if parts[0] != remote_name:
                        raise tarfile.TarError(f"unexpected archive member {member.name!r}")
                    relative = parts[1] if len(parts) > 1 else ""
                    member.name = posixpath.join(destination.name, relative).rstrip("/")
                    tar.extract(member, path=str(destination.parent), filter="data")
            reader.read()  # drain trailing padding so the sender never blocks
        finally:
            trio.from_thread.run(receive_channel.aclose)

    received = 0
    stderr = bytearray()
    result: list[BaseException] = []
    async with open_process(["tar", "cf", "-", "-C", remote_dir, remote_name]) as process:
        assert process.stdout is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_stderr, process.stderr, stderr)

            async def run_consumer() -> None:
                try:
                    await trio.to_thread.run_sync(consume)
                except BaseException as exc:
                    result.append(exc)

            nursery.start_soon(run_consumer)
            async with send_channel:
                async for chunk in process.stdout:
                    try:
                        await send_channel.send(bytes(chunk))
                    except GONE:
                        break  # the extractor stopped (and recorded why)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, None)
        returncode = await process.wait()
    if returncode == 0 and result:
        raise result[0]
    return returncode, bytes(stderr)


def parse_digests(output: bytes, root: str) -> dict[str, str]:
    """``sha256sum`` lines for files under ``root`` -> {path relative to root: digest}.

    GNU sha256sum escapes a name holding a backslash or newline and marks the
    line with a leading backslash; such names are unescaped.
    """
    digests: dict[str, str] = {}
    for line in output.decode(errors="surrogateescape").splitlines():
        escaped = line.startswith("\\")
        value, _, name = line.removeprefix("\\").partition("  ")
        if escaped:
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        relative = "" if name == root else posixpath.relpath(name, root)
        digests[relative] = value
    return digests


def tree_files(path: Path) -> Sequence[Path]:
    """Regular files under ``path`` (not following or counting symlinks), sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
