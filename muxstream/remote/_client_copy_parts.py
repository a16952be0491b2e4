"""The pieces both copy directions share (``_copy``): errors and results,
temporary names, remote operands, the remote commands run in the pod
(:class:`Pod`), and local digests.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
import subprocess
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import trio

from ._client_copy_tar import CHUNK, keep_stderr, parse_digests, tree_files
from ._client_endpoint import RemoteEndpoint
from ._client_exec import RemoteProcess, open_remote_process, run_remote

#: Seconds to spend removing a failed upload's temporary file on the server
#: (a new connection): long enough for a slow link, short enough for Ctrl-C.
CLEANUP_TIMEOUT = 10.0
#: The tag of the temporary name a resumable copy uses (fixed, so a later copy finds it).
RESUME_TAG = "resume"
#: Characters of the destination's name kept in its temporary name (NAME_MAX is 255).
_NAME_KEEP = 200
#: How a note on a kept partial copy ends.
RESUME_HINT = "copy again with resume (muxstream cp --resume) to continue it"


class CopyError(Exception):
    """A copy failed for a reason other than a lost connection: a remote
    command failed (``returncode``, ``stderr``), a path does not exist or has
    the wrong type, or the digests differ. The message names the fact."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: bytes = b"") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class CopyResult:
    """What a copy did.

    Attributes:
      destination: the path written (remote for uploads, local for downloads),
        after resolving "into an existing directory".
      size: bytes of file content at the destination (a file, or a tree's files).
      transferred: bytes of file content this call moved (``size`` minus
        ``resumed_from``).
      files: regular files copied.
      resumed_from: the byte this call continued at (0 unless resumed).
      verified: whether the SHA-256 comparison ran (``verify=True``).
      sha256: the file's hex digest (one file copied with ``verify``), else None.
    """

    destination: str
    size: int
    transferred: int
    files: int
    resumed_from: int = 0
    verified: bool = True
    sha256: str | None = None


def temp_name(name: str, *, resume: bool) -> str:
    """The temporary name beside ``name`` (hidden; ``_allow.TEMP_NAME`` matches it)."""
    tag = RESUME_TAG if resume else secrets.token_hex(6)
    return f".{name[:_NAME_KEEP]}.muxstream-{tag}.part"


def remote_operand(path: str) -> str:
    """``path`` as an operand no remote program can read as an option."""
    if not path or "\0" in path:
        raise ValueError(f"bad remote path {path!r}")
    return path if path.startswith(("/", ".")) else "./" + path


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace").strip()


def remote_failure(doing: str, returncode: int, stderr: bytes) -> CopyError:
    detail = _text(stderr) or f"exit status {returncode}"
    return CopyError(
        f"{doing} failed on the server: {detail}", returncode=returncode, stderr=stderr
    )


def add_note(exc: BaseException, text: str) -> None:
    """Say on ``exc`` what became of a temporary file (also on a Cancelled: the
    CLI reports an interruption's notes)."""
    exc.add_note(text)


@dataclass(frozen=True)
class Stat:
    kind: Literal["file", "dir", "other"]
    size: int
    mode: int


def parse_ls(output: bytes) -> Stat:
    """One ``ls -l -n`` line -> type, size and permission bits."""
    fields = output.decode(errors="replace").split()
    if len(fields) < 5 or len(fields[0]) < 10:
        raise CopyError(f"unexpected output of ls on the server: {_text(output)!r}")
    perms = fields[0]
    kind: Literal["file", "dir", "other"] = (
        "file" if perms[0] == "-" else "dir" if perms[0] == "d" else "other"
    )
    mode = 0
    for bit, char in enumerate(perms[1:10]):
        if char not in "-ST":  # s and t include x; S and T do not
            mode |= 1 << (8 - bit)
    size = int(fields[4]) if kind == "file" and fields[4].isdigit() else 0
    return Stat(kind, size, mode)


@dataclass(frozen=True)
class Pod:
    """Runs the copy's commands in one container."""

    endpoint: RemoteEndpoint
    name: str
    container: str | None

    def open(
        self, argv: Sequence[str], *, stdin: bool = False, stdout: bool = True
    ) -> AbstractAsyncContextManager[RemoteProcess]:
        return open_remote_process(
            self.endpoint, self.name, argv, container=self.container, stdin=stdin, stdout=stdout
        )

    async def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        return await run_remote(
            self.endpoint, self.name, argv, container=self.container, check=False
        )

    async def check(self, argv: Sequence[str], doing: str) -> bytes:
        result = await self.run(argv)
        if result.returncode != 0:
            raise remote_failure(doing, result.returncode, result.stderr or b"")
        return result.stdout or b""

    async def stat(self, path: str) -> Stat | None:
        """Type, size and mode of ``path`` (symlinks followed); None if it does not exist."""
        result = await self.run(["ls", "-d", "-L", "-l", "-n", "--", path])
        if result.returncode == 0:
            return parse_ls(result.stdout or b"")
        err = _text(result.stderr)
        if "No such file" in err or "Not a directory" in err:
            return None
        raise remote_failure(f"looking at {path}", result.returncode, result.stderr or b"")

    async def file_digest(self, path: str) -> str:
        out = await self.check(["sha256sum", "--", path], f"computing the SHA-256 of {path}")
        return out.removeprefix(b"\\").split(b" ", 1)[0].decode()

    async def check_digest(self, path: str, expected: str, ours: str) -> None:
        """Raise :class:`CopyError` unless ``path``'s SHA-256 is ``expected``."""
        theirs = await self.file_digest(path)
        if theirs != expected:
            raise CopyError(
                f"SHA-256 mismatch after the copy: {path} on the server has {theirs}, "
                f"{ours} have {expected}"
            )

    async def tree_digests(self, root: str) -> dict[str, str]:
        argv = ["find", root, "-type", "f", "-exec", "sha256sum", "{}", "+"]
        out = await self.check(argv, f"computing the SHA-256 of the files under {root}")
        return parse_digests(out, root)

    async def remove_quietly(self, argv: Sequence[str]) -> str | None:
        """Run a clean-up command, shielded and bounded by :data:`CLEANUP_TIMEOUT`;
        returns why it failed, or None. Once the exit status is in, the
        connection is closed at once: nothing more is needed from it."""
        outcome: list[str | None] = []
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
            try:
                with trio.CancelScope() as answered:
                    async with self.open(argv) as process:
                        stderr = bytearray()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(keep_stderr, process.stdout, bytearray())
                            nursery.start_soon(keep_stderr, process.stderr, stderr)
                        returncode = await process.wait()
                        failure = _text(bytes(stderr)) or f"exit status {returncode}"
                        outcome.append(None if returncode == 0 else failure)
                        answered.cancel()
            except Exception as exc:  # the connection or the endpoint: say which
                if not outcome:
                    outcome.append(str(exc) or type(exc).__name__)
        return outcome[0] if outcome else "timed out"


# --- local files ------------------------------------------------------------------


def local_digests(path: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``path`` (or of ``path``, keyed ``""``)."""
    if path.is_file():
        return {"": hash_prefix(path, None).hexdigest()}
    return {str(p.relative_to(path)): hash_prefix(p, None).hexdigest() for p in tree_files(path)}


def hash_prefix(path: Path, size: int | None) -> hashlib._Hash:
    digest = hashlib.sha256()
    left = size
    with path.open("rb") as file:
        while left is None or left > 0:
            block = file.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest


def read_hashed(file: IO[bytes], digest: hashlib._Hash) -> bytes:
    chunk = file.read(CHUNK)
    digest.update(chunk)
    return chunk


def write_hashed(file: IO[bytes], digest: hashlib._Hash, data: bytes) -> None:
    file.write(data)
    digest.update(data)


def compare_digests(expected: dict[str, str], actual: dict[str, str]) -> None:
    differing = sorted(
        set(expected) ^ set(actual)
        | {k for k in set(expected) & set(actual) if expected[k] != actual[k]}
    )
    if differing:
        shown = ", ".join(d or "." for d in differing[:5])
        raise CopyError(
            f"SHA-256 mismatch after the copy: {len(differing)} file(s) differ: {shown}"
        )


def source_name(path: Path) -> str:
    return Path(os.path.abspath(path)).name


def remote_name(remote: str) -> str:
    name = posixpath.basename(posixpath.normpath(remote))
    if name in ("", ".", "..", "/"):
        raise CopyError(f"cannot copy {remote!r} from the server: name the file or directory")
    return name
