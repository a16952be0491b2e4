"""The verified copy: into directories, temporary names, resume, allow-listed shapes."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from muxstream.remote import (
    CopyError,
    CopyResult,
    ExecRequest,
    LocalBackend,
    ProcessHandle,
    RemoteEndpoint,
    RemoteError,
    copy_from_remote,
    copy_to_remote,
    run_remote,
)

from ._remote_helpers import cutting_proxy, remote_server

TRANSPORTS = ["websocket", "spdy"]
#: Size of the files cut mid-copy and resumed (MUXSTREAM_TEST_REMOTE_MIB scales it).
BUSYBOX = shutil.which("busybox")
RESUME_BYTES = int(os.environ.get("MUXSTREAM_TEST_REMOTE_MIB", "32")) * 1024 * 1024 // 4


def leftovers(directory: Path) -> list[str]:
    """Temporary files a copy may have left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if ".muxstream-" in p.name)


class _CountingStdin(trio.abc.SendStream):
    """A process's stdin that calls ``reached()`` once ``after`` bytes went in."""

    def __init__(self, inner: trio.abc.SendStream, after: int, reached: Callable[[], None]):
        self.inner, self.after, self.reached, self.count = inner, after, reached, 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        self.count += len(data)
        if self.count >= self.after:
            self.reached()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


class RewritingBackend:
    """A LocalBackend that records every argv and may rewrite it first; with
    ``stdin_trigger``, the first ``tee`` sets that event once it was fed
    ``stdin_after`` bytes (the upload has certainly begun to land on disk)."""

    def __init__(
        self,
        backend: LocalBackend,
        rewrite: Callable[[tuple[str, ...]], Sequence[str]] = lambda argv: argv,
        stdin_trigger: trio.Event | None = None,
        stdin_after: int = 0,
    ) -> None:
        self.backend = backend
        self.rewrite = rewrite
        self.commands: list[tuple[str, ...]] = []
        self.stdin_trigger = stdin_trigger
        self.stdin_after = stdin_after

    async def start(self, request: ExecRequest) -> ProcessHandle:
        self.commands.append(request.command)
        command = tuple(self.rewrite(request.command))
        handle = await self.backend.start(dataclasses.replace(request, command=command))
        trigger = self.stdin_trigger
        if command[0] == "tee" and trigger is not None and handle.stdin is not None:
            self.stdin_trigger = None  # only the first upload is cut
            handle.stdin = _CountingStdin(handle.stdin, self.stdin_after, trigger.set)
        return handle

    async def attach(self, request: ExecRequest) -> ProcessHandle:
        return await self.backend.attach(request)


@asynccontextmanager
async def rewriting_server(
    rewrite: Callable[[tuple[str, ...]], Sequence[str]] = lambda argv: argv,
    *,
    transport: str = "auto",
    stdin_trigger: trio.Event | None = None,
    stdin_after: int = 0,
    **config: object,
) -> AsyncIterator[tuple[RemoteEndpoint, RewritingBackend]]:
    async with LocalBackend() as local:
        backend = RewritingBackend(local, rewrite, stdin_trigger, stdin_after)
        async with remote_server(transport, backend=backend, **config) as endpoint:
            yield endpoint, backend


async def cut_midway(
    endpoint: RemoteEndpoint,
    copy: Callable[[RemoteEndpoint], Awaitable[CopyResult]],
    *,
    upload: bool,
    limit: float,
    trigger: trio.Event | None = None,
) -> trio.BrokenResourceError:
    """Run ``copy`` through a proxy that resets the connection after ``limit``
    bytes one way (or when ``trigger`` is set); return the error it must raise."""
    port = int(endpoint.url.rsplit(":", 1)[1])
    async with cutting_proxy(port, limit, downstream=not upload, trigger=trigger) as (
        proxy_port,
        cut,
    ):
        via_proxy = dataclasses.replace(endpoint, url=f"http://127.0.0.1:{proxy_port}")
        with trio.fail_after(60), pytest.raises(trio.BrokenResourceError) as info:
            await copy(via_proxy)
        assert cut.is_set()
    return info.value


# --- into an existing directory -----------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
async def test_upload_into_an_existing_directory(tmp_path: Path, slash: str) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(100_000))
    source.chmod(0o741)  # the mode travels too
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "other.txt").write_text("stays")
    async with remote_server() as endpoint:
        one = await copy_to_remote(endpoint, "demo", source, f"{empty}{slash}")
        two = await copy_to_remote(endpoint, "demo", source, f"{full}{slash}")
    assert one.destination == f"{empty}/data.bin" and two.destination == f"{full}/data.bin"
    assert empty.is_dir() and (empty / "data.bin").read_bytes() == source.read_bytes()
    assert (empty / "data.bin").stat().st_mode & 0o777 == 0o741
    assert (full / "data.bin").read_bytes() == source.read_bytes()
    assert (full / "other.txt").read_text() == "stays"
    assert leftovers(empty) == leftovers(full) == []


async def test_upload_a_tree_into_a_directory_and_merge_into_its_namesake(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("new a")
    (tree / "sub" / "b.txt").write_text("b")
    target = tmp_path / "target"
    (target / "tree").mkdir(parents=True)
    (target / "tree" / "a.txt").write_text("old a")
    (target / "tree" / "kept.txt").write_text("kept")
    async with remote_server() as endpoint:
        result = await copy_to_remote(endpoint, "demo", tree, str(target))
    assert result.destination == f"{target}/tree" and result.files == 2
    assert (target / "tree" / "a.txt").read_text() == "new a"
    assert (target / "tree" / "sub" / "b.txt").read_text() == "b"
    assert (target / "tree" / "kept.txt").read_text() == "kept"
    assert leftovers(target) == []


@pytest.mark.parametrize("slash", ["", "/"])
async def test_download_into_an_existing_directory(tmp_path: Path, slash: str) -> None:
    remote = tmp_path / "remote"
    (remote / "tree").mkdir(parents=True)
    (remote / "data.bin").write_bytes(os.urandom(50_000))
    (remote / "data.bin").chmod(0o750)
    (remote / "tree" / "c.txt").write_text("c")
    local = tmp_path / "local"
    local.mkdir()
    async with remote_server() as endpoint:
        one = await copy_from_remote(endpoint, "demo", f"{remote}/data.bin", f"{local}{slash}")
        two = await copy_from_remote(endpoint, "demo", f"{remote}/tree", f"{local}{slash}")
    assert Path(one.destination) == local / "data.bin"
    assert Path(two.destination) == local / "tree"
    assert (local / "data.bin").read_bytes() == (remote / "data.bin").read_bytes()
    assert (local / "data.bin").stat().st_mode & 0o777 == 0o750
    assert (local / "tree" / "c.txt").read_text() == "c"
    assert leftovers(local) == []


async def test_a_trailing_slash_names_a_directory_that_must_exist(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"x")
    async with remote_server() as endpoint:
        with pytest.raises(CopyError, match="no such directory on the server"):
            await copy_to_remote(endpoint, "demo", source, f"{tmp_path}/absent/")
        with pytest.raises(CopyError, match="no such directory"):
            await copy_from_remote(endpoint, "demo", str(source), f"{tmp_path}/absent/")
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_missing_remote_file_is_named(transport: str, tmp_path: Path) -> None:
    async with remote_server(transport) as endpoint:
        with pytest.raises(CopyError) as info:
            await copy_from_remote(endpoint, "demo", f"{tmp_path}/missing", tmp_path / "x")
    assert str(info.value) == f"no such file on the server: {tmp_path}/missing"
    assert not (tmp_path / "x").exists()


# --- no partial file under the final name -------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_a_cut_copy_leaves_the_destination_untouched(
    transport: str, direction: str, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(16 * 1024 * 1024))
    final = tmp_path / "dest" / "copy.bin"
    final.parent.mkdir()
    final.write_bytes(b"the previous version")
    upload = direction == "upload"

    async def copy(endpoint: RemoteEndpoint) -> CopyResult:
        if upload:
            return await copy_to_remote(endpoint, "demo", source, str(final))
        return await copy_from_remote(endpoint, "demo", str(source), final)

    async with remote_server(transport) as endpoint:
        error = await cut_midway(endpoint, copy, upload=upload, limit=2 * 1024 * 1024)
    assert final.read_bytes() == b"the previous version"
    assert leftovers(final.parent) == []
    assert any("removed the temporary file" in note for note in error.__notes__)


@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_a_cut_tree_copy_leaves_nothing_behind(direction: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    (tree / "small.txt").write_text("small")
    dest = tmp_path / "dest"
    dest.mkdir()
    upload = direction == "upload"

    async def copy(endpoint: RemoteEndpoint) -> CopyResult:
        if upload:
            return await copy_to_remote(endpoint, "demo", tree, str(dest))
        return await copy_from_remote(endpoint, "demo", str(tree), dest)

    async with remote_server() as endpoint:
        error = await cut_midway(endpoint, copy, upload=upload, limit=2 * 1024 * 1024)
    assert list(dest.iterdir()) == []
    assert any("removed the temporary" in note for note in error.__notes__)


async def test_a_digest_mismatch_removes_the_temporary_file(tmp_path: Path) -> None:
    def lie(argv: tuple[str, ...]) -> Sequence[str]:
        return ["echo", "0" * 64 + "  -"] if argv[0] == "sha256sum" else argv

    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(10_000))
    (tmp_path / "up").mkdir()
    (tmp_path / "down").mkdir()
    async with rewriting_server(lie) as (endpoint, _):
        with pytest.raises(CopyError, match="SHA-256 mismatch") as up:
            await copy_to_remote(endpoint, "demo", source, f"{tmp_path}/up/copy.bin")
        with pytest.raises(CopyError, match="SHA-256 mismatch") as down:
            await copy_from_remote(endpoint, "demo", str(source), tmp_path / "down" / "copy.bin")
    assert list((tmp_path / "up").iterdir()) == list((tmp_path / "down").iterdir()) == []
    assert "removed the temporary file" in up.value.__notes__[0]
    assert "removed the temporary file" in down.value.__notes__[0]


async def test_a_temporary_file_that_cannot_be_removed_is_named(tmp_path: Path) -> None:
    def fail(argv: tuple[str, ...]) -> Sequence[str]:
        if argv[0] == "sha256sum":
            return ["echo", "0" * 64 + "  -"]
        if argv[0] == "rm":
            return ["sh", "-c", "echo 'rm: Permission denied' >&2; exit 1"]
        return argv

    source = tmp_path / "data.bin"
    source.write_bytes(b"data")
    async with rewriting_server(fail) as (endpoint, _):
        with pytest.raises(CopyError, match="SHA-256 mismatch") as info:
            await copy_to_remote(endpoint, "demo", source, f"{tmp_path}/copy.bin")
    [temporary] = [p for p in tmp_path.iterdir() if ".muxstream-" in p.name]
    assert info.value.__notes__ == [
        f"could not remove the temporary file {temporary} on the server "
        "(rm: Permission denied)"
    ]
    assert not (tmp_path / "copy.bin").exists()


async def test_cancelling_an_upload_removes_its_temporary_file(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(8 * 1024 * 1024))
    (tmp_path / "dest").mkdir()
    seen: list[int] = []
    async with remote_server() as endpoint:
        with trio.CancelScope() as scope:

            def progress(done: int, total: int | None) -> None:
                seen.append(done)
                if done >= 2 * 1024 * 1024:
                    scope.cancel()

            await copy_to_remote(
                endpoint, "demo", source, f"{tmp_path}/dest/copy.bin", progress=progress
            )
    assert scope.cancelled_caught and seen
    assert list((tmp_path / "dest").iterdir()) == []


# --- resume -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_resume_continues_a_cut_copy_to_an_identical_file(
    transport: str, direction: str, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(RESUME_BYTES))
    final = tmp_path / "dest" / "copy.bin"
    final.parent.mkdir()

    async def copy(endpoint: RemoteEndpoint) -> CopyResult:
        if direction == "upload":
            return await copy_to_remote(endpoint, "demo", source, str(final), resume=True)
        return await copy_from_remote(endpoint, "demo", str(source), final, resume=True)

    # A download is cut after half the file; an upload once the server has fed
    # a quarter of it to the remote writer (so some of it is on disk).
    upload = direction == "upload"
    trigger = trio.Event()
    async with rewriting_server(
        transport=transport, stdin_trigger=trigger, stdin_after=RESUME_BYTES // 4
    ) as (endpoint, _):
        limit = float("inf") if upload else RESUME_BYTES // 2
        error = await cut_midway(endpoint, copy, upload=upload, limit=limit, trigger=trigger)
        assert "partial copy stays" in error.__notes__[0]
        assert not final.exists()
        [partial] = leftovers(final.parent)
        # Let the server notice the cut and kill the writer before we measure.
        await trio.testing.wait_all_tasks_blocked()
        kept = (final.parent / partial).stat().st_size
        assert 0 < kept < RESUME_BYTES
        with trio.fail_after(60):
            result = await copy(endpoint)
    assert result.resumed_from == kept
    assert result.transferred == RESUME_BYTES - kept
    digest = hashlib.sha256(source.read_bytes()).digest()
    assert hashlib.sha256(final.read_bytes()).digest() == digest
    assert leftovers(final.parent) == []


async def test_resume_restarts_when_the_partial_upload_is_not_a_prefix(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(300_000))
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / ".copy.bin.muxstream-resume.part").write_bytes(b"not the same bytes")
    async with remote_server() as endpoint:
        result = await copy_to_remote(
            endpoint, "demo", source, f"{tmp_path}/dest/copy.bin", resume=True
        )
    assert result.resumed_from == 0 and result.transferred == 300_000
    assert (tmp_path / "dest" / "copy.bin").read_bytes() == source.read_bytes()
    assert leftovers(tmp_path / "dest") == []


async def test_resume_of_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    async with remote_server() as endpoint:
        with pytest.raises(CopyError, match="resume copies one file"):
            await copy_to_remote(endpoint, "demo", tmp_path / "tree", "/tmp", resume=True)


# --- under an allow-list ------------------------------------------------------------


async def test_copies_work_under_an_allow_list_with_allow_copy(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(200_000))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "x.txt").write_text("x")
    (tmp_path / "dest").mkdir()
    (tmp_path / "back").mkdir()
    async with rewriting_server(allowed_commands={"echo"}, allow_copy=True) as (endpoint, spy):
        await copy_to_remote(endpoint, "demo", source, f"{tmp_path}/dest", resume=True)
        await copy_to_remote(endpoint, "demo", tree, f"{tmp_path}/dest")
        await copy_to_remote(endpoint, "demo", tree, f"{tmp_path}/dest")  # merge
        await copy_from_remote(endpoint, "demo", f"{tmp_path}/dest/data.bin", tmp_path / "back")
        await copy_from_remote(endpoint, "demo", f"{tmp_path}/dest/tree", tmp_path / "back")
        with pytest.raises(RemoteError, match="allowed only with the arguments a copy sends"):
            await run_remote(endpoint, "demo", ["tar", "cf", "-", "--to-command=id", "/etc"])
    assert (tmp_path / "back" / "data.bin").read_bytes() == source.read_bytes()
    assert (tmp_path / "back" / "tree" / "sub" / "x.txt").read_text() == "x"
    programs = {argv[0] for argv in spy.commands}
    assert {"tee", "tail", "sha256sum", "tar", "find", "mv", "cp", "rm", "ls"} <= programs
    assert ("tar", "cf", "-", "--to-command=id", "/etc") not in spy.commands  # never started


# --- the tools a pod has ------------------------------------------------------------


@pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed (.ci/run installs it)")
async def test_every_copy_runs_on_busybox_tools(tmp_path: Path) -> None:
    """Pods without coreutils (alpine, busybox images) have busybox applets: the
    remote commands must work there too, resume included."""
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(3_000_000))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "x.txt").write_text("x")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    remote, back = tmp_path / "remote", tmp_path / "back"
    remote.mkdir()
    back.mkdir()
    (remote / ".data.bin.muxstream-resume.part").write_bytes(source.read_bytes()[:1_000_000])
    (back / ".data.bin.muxstream-resume.part").write_bytes(source.read_bytes()[:2_000_000])

    def busybox(argv: tuple[str, ...]) -> Sequence[str]:
        return [str(BUSYBOX), *argv]

    async with rewriting_server(busybox) as (endpoint, spy):
        up = await copy_to_remote(endpoint, "demo", source, f"{remote}/", resume=True)
        down = await copy_from_remote(endpoint, "demo", f"{remote}/data.bin", back, resume=True)
        await copy_to_remote(endpoint, "demo", tree, str(remote))
        await copy_to_remote(endpoint, "demo", tree, str(remote))  # merged into its namesake
        await copy_from_remote(endpoint, "demo", f"{remote}/tree", back)
        with pytest.raises(CopyError, match="no such file on the server"):
            await copy_from_remote(endpoint, "demo", f"{remote}/absent", back)
    assert (up.resumed_from, down.resumed_from) == (1_000_000, 2_000_000)
    assert (back / "data.bin").read_bytes() == source.read_bytes()
    assert (back / "tree" / "sub" / "x.txt").read_text() == "x"
    assert (remote / "tree" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert leftovers(remote) == leftovers(back) == leftovers(remote / "tree") == []
    assert {"ls", "tee", "tail", "sha256sum", "find", "tar", "mv", "cp", "rm"} <= {
        argv[0] for argv in spy.commands
    }
