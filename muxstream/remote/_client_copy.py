"""Verified file copy through exec: temporary names, rename on success, resume.

The contract, both directions:

* A destination that is an existing directory receives the copy *inside* it,
  under the source's name (as ``kubectl cp`` and ``cp(1)`` do); a destination
  written with a trailing ``/`` must be an existing directory.
* Bytes go to a temporary name beside the destination
  (``.NAME.muxstream-XXXXXXXXXXXX.part``), and only once the SHA-256 of what
  arrived matches what was sent is it renamed to the destination. The
  destination never holds a partial file. On failure the temporary file is
  removed, and a note on the exception says so (or says why it could not be).
* ``resume=True`` (one file): the temporary name is fixed
  (``.NAME.muxstream-resume.part``) and survives a lost connection, a
  cancellation or Ctrl-C; the next ``resume=True`` copy of the same file
  continues at the byte where that one stopped. An upload checks first that
  the partial file on the server is a prefix of the local one (its SHA-256);
  a download relies on the final SHA-256 (a mismatch removes the partial).

The remote side runs only standard tools found in pods (coreutils or busybox,
tar), as argv without a shell, and only in the shapes ``_allow`` admits:
``ls -d -L -l -n -- P`` (type, size, mode), ``tee [-a] -- TEMP`` (upload from
an offset), ``tail -c +N -- P`` (download from an offset), ``sha256sum -- P``,
``find P -type f -exec sha256sum {} +`` (a tree's digests), ``chmod MODE --
TEMP``, ``mv -f -- TEMP P``, ``cp -R -p -- TEMP/. P`` (a tree merged into an
existing directory), ``rm [-r] -f -- TEMP``, and tar for trees (``_copy_tar``).
Remote paths are passed as ``/...`` or ``./...``, never as something that
could read as an option.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import shutil
import stat
from pathlib import Path

import trio

from .._failures import GONE
from ._client_copy_parts import (
    RESUME_HINT,
    Pod,
    Stat,
    add_note,
    compare_digests,
    hash_prefix,
    local_digests,
    read_hashed,
    remote_failure,
    remote_name,
    remote_operand,
    source_name,
    temp_name,
    write_hashed,
)
from ._client_copy_parts import CopyError as CopyError
from ._client_copy_parts import CopyResult as CopyResult
from ._client_copy_tar import CHUNK, keep_stderr, receive_tree, send_tree, tree_files
from ._client_copy_tar import ProgressCallback as ProgressCallback
from ._client_endpoint import RemoteEndpoint

# --- upload -----------------------------------------------------------------------


async def copy_to_remote(
    endpoint: RemoteEndpoint,
    pod: str,
    local_path: str | os.PathLike[str],
    remote_path: str,
    *,
    container: str | None = None,
    progress: ProgressCallback | None = None,
    verify: bool = True,
    resume: bool = False,
) -> CopyResult:
    """Copy a local file or directory to ``remote_path`` in ``pod``.

    Into ``remote_path`` if it is a directory there; through a temporary name
    renamed after the SHA-256 check (``verify``); ``resume`` continues an
    earlier interrupted ``resume=True`` upload of this file (files only). See
    the module documentation for the full contract. ``progress(done, total)``
    is called as data moves.

    Raises :class:`CopyError` (the message names the fact: no such directory
    on the server, a remote command failed, the digests differ),
    ``FileNotFoundError`` for a missing local source, :class:`RemoteError` if
    the endpoint refuses a command, ``trio.BrokenResourceError`` if the
    connection breaks. A failure after the transfer started carries a note
    (``exc.__notes__``) saying what became of the temporary file.
    """
    source = Path(local_path)
    if not source.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", str(source))
    if resume and source.is_dir():
        raise CopyError(f"resume copies one file; {source} is a directory")
    target = Pod(endpoint, pod, container)
    final, existing = await _remote_destination(
        target, remote_operand(remote_path), source_name(source)
    )
    if source.is_dir():
        if existing is not None and existing.kind != "dir":
            raise CopyError(
                f"cannot overwrite {final} on the server (not a directory) with a directory"
            )
        return await _upload_tree(
            target, source, final, merge=existing is not None, verify=verify, progress=progress
        )
    if existing is not None and existing.kind == "dir":
        raise CopyError(f"cannot overwrite the directory {final} on the server with a file")
    return await _upload_file(
        target, source, final, verify=verify, resume=resume, progress=progress
    )


async def _remote_destination(pod: Pod, remote: str, name: str) -> tuple[str, Stat | None]:
    """The final remote path (into an existing directory) and what is there now."""
    found = await pod.stat(remote)
    if found is not None and found.kind == "dir":
        final = posixpath.join(remote, name)
        return final, await pod.stat(final)
    if remote.endswith("/"):
        raise CopyError(f"no such directory on the server: {remote}")
    if found is None:
        parent = posixpath.dirname(remote) or "/"
        above = await pod.stat(parent)
        if above is None or above.kind != "dir":
            raise CopyError(f"no such directory on the server: {parent}")
    return remote, found


async def _upload_file(
    pod: Pod,
    source: Path,
    final: str,
    *,
    verify: bool,
    resume: bool,
    progress: ProgressCallback | None,
) -> CopyResult:
    info = source.stat()
    temp = posixpath.join(
        posixpath.dirname(final), temp_name(posixpath.basename(final), resume=resume)
    )
    offset, digest = (
        (await _upload_offset(pod, source, temp, info.st_size)) if resume else (0, hashlib.sha256())
    )
    try:
        await _send_file(pod, source, temp, offset, digest, info.st_size, progress)
        mode = f"{stat.S_IMODE(info.st_mode) & 0o777:03o}"
        await pod.check(["chmod", mode, "--", temp], f"setting the mode of {temp}")
        if verify:
            await pod.check_digest(temp, digest.hexdigest(), "the bytes sent")
        await pod.check(["mv", "-f", "--", temp, final], f"renaming {temp} to {final}")
    except BaseException as exc:
        await _after_failed_upload(pod, temp, exc, keep=resume and not isinstance(exc, CopyError))
        raise
    return CopyResult(
        final,
        info.st_size,
        info.st_size - offset,
        1,
        offset,
        verify,
        digest.hexdigest() if verify else None,
    )


async def _upload_offset(pod: Pod, source: Path, temp: str, size: int) -> tuple[int, hashlib._Hash]:
    """Where a resumed upload continues: the end of the partial file on the
    server if it is a prefix of ``source`` (same SHA-256), else 0."""
    partial = await pod.stat(temp)
    if partial is None or partial.kind != "file" or not 0 < partial.size <= size:
        return 0, hashlib.sha256()
    ours = await trio.to_thread.run_sync(hash_prefix, source, partial.size)
    if await pod.file_digest(temp) != ours.hexdigest():
        return 0, hashlib.sha256()
    return partial.size, ours


async def _send_file(
    pod: Pod,
    source: Path,
    temp: str,
    offset: int,
    digest: hashlib._Hash,
    size: int,
    progress: ProgressCallback | None,
) -> None:
    """Send ``source`` from ``offset`` into ``tee [-a] -- temp`` (stdout not
    requested, so nothing comes back); ``digest`` takes every byte sent."""
    argv = ["tee", "-a", "--", temp] if offset else ["tee", "--", temp]
    stderr = bytearray()
    failure: BaseException | None = None
    file = await trio.to_thread.run_sync(source.open, "rb")
    with file:
        file.seek(offset)
        async with pod.open(argv, stdin=True, stdout=False) as process:
            assert process.stdin is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_stderr, process.stderr, stderr)
                done = offset
                try:
                    while chunk := await trio.to_thread.run_sync(read_hashed, file, digest):
                        await process.stdin.send_all(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, size)
                    await process.stdin.aclose()
                except GONE as exc:
                    failure = exc  # tee may have failed: its status tells
            returncode = await process.wait()
    if returncode != 0:
        raise remote_failure(f"writing {temp}", returncode, bytes(stderr))
    if failure is not None:
        raise trio.BrokenResourceError("connection lost during the copy") from failure


async def _upload_tree(
    pod: Pod,
    source: Path,
    final: str,
    *,
    merge: bool,
    verify: bool,
    progress: ProgressCallback | None,
) -> CopyResult:
    files = tree_files(source)
    total = sum(f.stat().st_size for f in files)
    parent = posixpath.dirname(final) or "/"
    temp = posixpath.join(parent, temp_name(posixpath.basename(final), resume=False))
    try:
        returncode, err = await send_tree(
            pod.open, source, posixpath.basename(temp), parent, total=total, progress=progress
        )
        if returncode != 0:
            raise remote_failure(f"extracting into {parent} (tar)", returncode, err)
        if verify:
            ours = await trio.to_thread.run_sync(local_digests, source)
            compare_digests(ours, await pod.tree_digests(temp))
        if merge:
            await pod.check(["cp", "-R", "-p", "--", temp + "/.", final], f"merging into {final}")
            await pod.check(["rm", "-r", "-f", "--", temp], f"removing {temp}")
        else:
            await pod.check(["mv", "-f", "--", temp, final], f"renaming {temp} to {final}")
    except BaseException as exc:
        await _after_failed_upload(pod, temp, exc, keep=False, tree=True)
        raise
    if progress is not None:
        progress(total, total)
    return CopyResult(final, total, total, len(files), 0, verify)


async def _after_failed_upload(
    pod: Pod, temp: str, exc: BaseException, *, keep: bool, tree: bool = False
) -> None:
    if keep:
        add_note(exc, f"the partial copy stays on the server as {temp}: {RESUME_HINT}")
        return
    problem = await pod.remove_quietly(
        ["rm", "-r", "-f", "--", temp] if tree else ["rm", "-f", "--", temp]
    )
    if problem is None:
        add_note(exc, f"removed the temporary file {temp} on the server")
    else:
        add_note(exc, f"could not remove the temporary file {temp} on the server ({problem})")


# --- download ---------------------------------------------------------------------


async def copy_from_remote(
    endpoint: RemoteEndpoint,
    pod: str,
    remote_path: str,
    local_path: str | os.PathLike[str],
    *,
    container: str | None = None,
    progress: ProgressCallback | None = None,
    verify: bool = True,
    resume: bool = False,
) -> CopyResult:
    """Copy ``remote_path`` in ``pod`` (a file or directory) to ``local_path``.

    Into ``local_path`` if it is a directory; through a temporary name renamed
    after the SHA-256 check (``verify``); ``resume`` continues an earlier
    interrupted ``resume=True`` download of this file (files only). See the
    module documentation for the full contract. ``progress(done, total)`` is
    called as data moves (``total`` is None for a tree).

    Raises :class:`CopyError` (``no such file on the server: PATH``, a remote
    command failed, the digests differ, no such local directory),
    ``tarfile.TarError`` (e.g. ``FilterError``) for an unsafe or corrupt
    archive, :class:`RemoteError` if the endpoint refuses a command,
    ``trio.BrokenResourceError`` if the connection breaks. A failure carries a
    note (``exc.__notes__``) saying what became of the temporary file.
    """
    target = Pod(endpoint, pod, container)
    remote = remote_operand(remote_path)
    found = await target.stat(remote)
    if found is None:
        raise CopyError(f"no such file on the server: {remote_path}")
    if found.kind == "other":
        raise CopyError(f"{remote_path} on the server is neither a regular file nor a directory")
    if resume and found.kind == "dir":
        raise CopyError(f"resume copies one file; {remote_path} on the server is a directory")
    final = _local_destination(os.fspath(local_path), remote_name(remote))
    if found.kind == "dir":
        if final.exists() and not final.is_dir():
            raise CopyError(f"cannot overwrite {final} (not a directory) with a directory")
        return await _download_tree(target, remote, final, verify=verify, progress=progress)
    if final.is_dir():
        raise CopyError(f"cannot overwrite the directory {final} with a file")
    return await _download_file(
        target, remote, found, final, verify=verify, resume=resume, progress=progress
    )


def _local_destination(given: str, name: str) -> Path:
    destination = Path(given)
    if destination.is_dir():
        return destination / name
    if given.endswith(os.sep):
        raise CopyError(f"no such directory: {given}")
    if not destination.parent.is_dir():
        raise CopyError(f"no such directory: {destination.parent}")
    return destination


async def _download_file(
    pod: Pod,
    remote: str,
    found: Stat,
    final: Path,
    *,
    verify: bool,
    resume: bool,
    progress: ProgressCallback | None,
) -> CopyResult:
    temp = final.parent / temp_name(final.name, resume=resume)
    offset, digest = 0, hashlib.sha256()
    if resume and temp.is_file() and temp.stat().st_size <= found.size:
        offset = temp.stat().st_size
        digest = await trio.to_thread.run_sync(hash_prefix, temp, offset)
    try:
        await _receive_file(pod, remote, temp, offset, digest, found.size, progress)
        if verify:
            await pod.check_digest(remote, digest.hexdigest(), "the bytes received")
        os.chmod(temp, found.mode)
        os.replace(temp, final)
    except BaseException as exc:
        if resume and not isinstance(exc, CopyError):
            add_note(exc, f"the partial copy stays as {temp}: {RESUME_HINT}")
        else:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            add_note(exc, f"removed the temporary file {temp}")
        raise
    size = final.stat().st_size
    return CopyResult(
        str(final), size, size - offset, 1, offset, verify, digest.hexdigest() if verify else None
    )


async def _receive_file(
    pod: Pod,
    remote: str,
    temp: Path,
    offset: int,
    digest: hashlib._Hash,
    size: int,
    progress: ProgressCallback | None,
) -> None:
    """Append ``remote`` from byte ``offset`` (``tail -c +N``) to ``temp``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
    file = os.fdopen(os.open(temp, flags, 0o600), "wb", buffering=0)
    stderr = bytearray()
    with file:
        async with pod.open(["tail", "-c", f"+{offset + 1}", "--", remote]) as process:
            assert process.stdout is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_stderr, process.stderr, stderr)
                pending = bytearray()
                done = offset
                try:
                    async for chunk in process.stdout:
                        pending += chunk
                        done += len(chunk)
                        if len(pending) >= CHUNK:
                            data = bytes(pending)
                            pending.clear()
                            await trio.to_thread.run_sync(write_hashed, file, digest, data)
                        if progress is not None:
                            progress(done, size)
                finally:
                    # Also when the connection broke: what arrived is a prefix
                    # that a resumed copy need not fetch again (small: < CHUNK).
                    write_hashed(file, digest, bytes(pending))
            returncode = await process.wait()
    if returncode != 0:
        raise remote_failure(f"reading {remote}", returncode, bytes(stderr))


async def _download_tree(
    pod: Pod, remote: str, final: Path, *, verify: bool, progress: ProgressCallback | None
) -> CopyResult:
    root = remote.rstrip("/") or "/"
    temp = final.parent / temp_name(final.name, resume=False)
    try:
        returncode, err = await receive_tree(
            pod.open,
            posixpath.dirname(root) or "/",
            posixpath.basename(root),
            temp,
            progress=progress,
        )
        if returncode != 0:
            raise remote_failure(f"archiving {root} (tar)", returncode, err)
        ours = await trio.to_thread.run_sync(local_digests, temp)
        if verify:
            compare_digests(await pod.tree_digests(root), ours)
        files = tree_files(temp)
        total = sum(f.stat().st_size for f in files)
        if final.is_dir():
            await trio.to_thread.run_sync(_merge_local, temp, final)
        else:
            temp.rename(final)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        add_note(exc, f"removed the temporary directory {temp}")
        raise
    return CopyResult(str(final), total, total, len(files), 0, verify)


def _merge_local(source: Path, destination: Path) -> None:
    """Move everything under ``source`` into the existing ``destination``; remove ``source``."""
    for directory, subdirs, names in os.walk(source):
        relative = Path(directory).relative_to(source)
        (destination / relative).mkdir(exist_ok=True)
        for name in names:
            os.replace(Path(directory) / name, destination / relative / name)
        for name in subdirs:
            if (Path(directory) / name).is_symlink():
                os.replace(Path(directory) / name, destination / relative / name)
    shutil.rmtree(source)
