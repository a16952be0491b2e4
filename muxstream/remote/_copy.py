"""File copy through exec and tar, as ``kubectl cp`` does it.

To the remote side: ``tar -xmf - -C DIR`` with a tar stream on stdin. From the
remote side: ``tar cf - -C DIR NAME`` and a tar stream on stdout. The local
tar work runs in a thread (``tarfile`` is blocking) and talks to the trio side
through a small channel of chunks, so memory stays bounded for any size.
Extraction uses tarfile's ``data`` filter: no absolute paths, no ``..``, no
device files, no links outside the destination.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tarfile
from collections.abc import Callable
from pathlib import Path

import trio

from ._client import RemoteEndpoint, open_remote_process

#: ``progress(done_bytes, total_bytes_or_None)``, called as data moves.
ProgressCallback = Callable[[int, int | None], None]
CHUNK = 1024 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class CopyError(Exception):
    """The remote tar failed; carries its exit code and stderr."""

    def __init__(self, returncode: int, stderr: bytes) -> None:
        super().__init__(
            f"remote tar exited {returncode}: {stderr.decode(errors='replace').strip()}"
        )
        self.returncode = returncode
        self.stderr = stderr


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


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


async def copy_to_remote(
    endpoint: RemoteEndpoint,
    pod: str,
    local_path: str | os.PathLike[str],
    remote_path: str,
    *,
    container: str | None = None,
    progress: ProgressCallback | None = None,
) -> int:
    """Copy a local file or directory to ``remote_path`` in ``pod``.

    Returns the number of payload bytes (file contents) sent. Raises
    :class:`CopyError` if the remote tar fails.
    """
    source = Path(local_path)
    total = _tree_size(source)
    remote_dir = posixpath.dirname(remote_path.rstrip("/")) or "."
    remote_name = posixpath.basename(remote_path.rstrip("/"))
    send_channel, receive_channel = trio.open_memory_channel[bytes](4)

    def produce() -> None:
        writer = _ChannelWriter(send_channel)
        try:
            with tarfile.open(fileobj=writer, mode="w|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
                tar.add(str(source), arcname=remote_name)
        finally:
            writer.close()

    stderr = bytearray()
    async with open_remote_process(
        endpoint, pod, ["tar", "-xmf", "-", "-C", remote_dir], container=container, stdin=True
    ) as process:
        assert process.stdin is not None
        async with trio.open_nursery() as nursery:

            async def drain(source: trio.abc.ReceiveStream | None, keep: bool) -> None:
                if source is not None:
                    async for chunk in source:
                        if keep:
                            stderr.extend(chunk[: 64 * 1024 - len(stderr)])

            nursery.start_soon(drain, process.stdout, False)
            nursery.start_soon(drain, process.stderr, True)

            async def run_producer() -> None:
                # If the sender below stopped (the connection broke), the
                # producer's next write fails instead of blocking forever.
                with contextlib.suppress(*_GONE):
                    await trio.to_thread.run_sync(produce)

            nursery.start_soon(run_producer)
            sent = 0
            failure: BaseException | None = None
            async with receive_channel:
                try:
                    async for chunk in receive_channel:
                        await process.stdin.send_all(chunk)
                        sent += len(chunk)
                        if progress is not None:
                            progress(min(sent, total), total)
                except _GONE as exc:
                    failure = exc
            if failure is None:
                await process.stdin.aclose()
            else:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise trio.BrokenResourceError("connection lost during the copy") from failure
        returncode = await process.wait()
    if returncode != 0:
        raise CopyError(returncode, bytes(stderr))
    if progress is not None:
        progress(total, total)
    return total


async def copy_from_remote(
    endpoint: RemoteEndpoint,
    pod: str,
    remote_path: str,
    local_path: str | os.PathLike[str],
    *,
    container: str | None = None,
    progress: ProgressCallback | None = None,
) -> int:
    """Copy ``remote_path`` in ``pod`` (a file or directory) to ``local_path``.

    Returns the number of archive bytes received. ``progress`` gets
    ``(received, None)``: the remote size is not known in advance. Raises
    :class:`CopyError` if the remote tar fails, ``tarfile.TarError`` (e.g.
    ``FilterError``) for an unsafe or corrupt archive.
    """
    destination = Path(local_path)
    remote_dir = posixpath.dirname(remote_path.rstrip("/")) or "."
    remote_name = posixpath.basename(remote_path.rstrip("/"))
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
    async with open_remote_process(
        endpoint, pod, ["tar", "cf", "-", "-C", remote_dir, remote_name], container=container
    ) as process:
        assert process.stdout is not None
        async with trio.open_nursery() as nursery:

            async def drain_stderr() -> None:
                if process.stderr is not None:
                    async for chunk in process.stderr:
                        stderr.extend(chunk[: 64 * 1024 - len(stderr)])

            nursery.start_soon(drain_stderr)
            result: list[BaseException] = []

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
                    except _GONE:
                        break  # the extractor stopped (and recorded why)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, None)
        returncode = await process.wait()
    if returncode != 0:
        raise CopyError(returncode, bytes(stderr))
    if result:
        raise result[0]
    return received
