"""Fixtures for interop tests against real Go spdystream peers.

The Go program in ``tests/interop/go/spdypeer`` is built once per test session from
Debian's ``golang-go`` and ``golang-github-docker-spdystream-dev`` (the library's
source lives in ``/usr/share/gocode``; GOPATH mode resolves it offline). Tests that
use the ``spdypeer`` fixture are skipped, with the reason, only when the Go
toolchain or the spdystream source is absent; a build failure is a test error.

``MUXSTREAM_GOCODE`` overrides the GOPATH entry that holds spdystream's source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

GO_SOURCE = Path(__file__).parent / "go" / "spdypeer"
GOCODE = Path(os.environ.get("MUXSTREAM_GOCODE", "/usr/share/gocode"))
SPDYSTREAM_SOURCE = GOCODE / "src" / "github.com" / "moby" / "spdystream"

#: Bound on one `go build` (a cold build takes a few seconds here).
BUILD_TIMEOUT = 600.0
#: Bound on one framer subprocess run.
FRAMER_TIMEOUT = 60.0


class GoPeer:
    """A running spdypeer session subcommand: JSON lines on stdout, stderr kept for
    failure messages, stdin held open (closing it stops ``echo-server``)."""

    def __init__(self, process: trio.Process, stderr_file: Any, argv: Sequence[str]) -> None:
        self.process = process
        self.argv = list(argv)
        self._stderr_file = stderr_file
        self._buffer = bytearray()

    def stderr_text(self) -> str:
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        text: str = self._stderr_file.read().decode("utf-8", "replace")
        return text[-4000:]

    def describe(self) -> str:
        command = " ".join(self.argv)
        return f"{command} (rc={self.process.returncode}); stderr:\n{self.stderr_text()}"

    async def read_json(self) -> dict[str, Any]:
        """The next stdout line, parsed. Raises AssertionError if the peer exits first."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                await self.process.wait()
                raise AssertionError(f"Go peer exited without output: {self.describe()}")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"bad JSON from Go peer {line!r}: {self.describe()}") from exc
        assert isinstance(value, dict), value
        return value

    async def read_event(self, event: str) -> dict[str, Any]:
        """The next stdout object whose ``event`` is ``event`` (others are skipped)."""
        while True:
            value = await self.read_json()
            if value.get("event") == event:
                return value

    async def listening_port(self) -> int:
        """The port from the peer's first line, ``{"event": "listening", "addr": ...}``."""
        value = await self.read_event("listening")
        return int(str(value["addr"]).rsplit(":", 1)[1])

    async def close_stdin(self) -> None:
        if self.process.stdin is not None:
            await self.process.stdin.aclose()

    async def wait(self) -> int:
        """Wait for exit; asserts a zero exit status."""
        rc = await self.process.wait()
        assert rc == 0, f"Go peer failed: {self.describe()}"
        return rc


class SpdyPeer:
    """The built spdypeer binary."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run_framer(self, subcommand: str, data: bytes = b"", *args: str) -> tuple[bytes, str, int]:
        """Run ``framer-dump`` / ``framer-read`` to completion: (stdout, stderr, rc)."""
        done = subprocess.run(
            [str(self.path), subcommand, *args],
            input=data,
            capture_output=True,
            timeout=FRAMER_TIMEOUT,
            check=False,
        )
        return done.stdout, done.stderr.decode("utf-8", "replace"), done.returncode

    def read_frames(self, data: bytes) -> list[dict[str, Any]]:
        """Decode ``data`` with spdystream's framer; every frame as framer-read's JSON.

        A decoding error is returned as a final ``{"type": "ERROR", "error": ...}``.
        """
        out, err, rc = self.run_framer("framer-read", data)
        frames = [json.loads(line) for line in out.splitlines() if line.strip()]
        if rc not in (0, 1) or (rc == 1 and (not frames or frames[-1]["type"] != "ERROR")):
            raise AssertionError(f"framer-read failed (rc={rc}): {err}")
        return frames

    @asynccontextmanager
    async def run(self, subcommand: str, *args: str) -> AsyncIterator[GoPeer]:
        """Start a session subcommand; on exit from the block, kill it if still running."""
        argv = [str(self.path), subcommand, *args]
        with tempfile.TemporaryFile() as stderr_file:
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file
            )
            peer = GoPeer(process, stderr_file, argv)
            try:
                yield peer
            except BaseException as exc:
                # Whatever failed, what the Go side said is usually the explanation.
                exc.add_note(f"Go peer: {peer.describe()}")
                raise
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
                    for pipe in (process.stdin, process.stdout):
                        if pipe is not None:
                            await pipe.aclose()


def _build(out_dir: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go toolchain not installed (Debian package golang-go)")
    if not (SPDYSTREAM_SOURCE / "connection.go").exists():
        pytest.skip(
            f"spdystream source not found at {SPDYSTREAM_SOURCE} "
            "(Debian package golang-github-docker-spdystream-dev)"
        )
    binary = out_dir / "spdypeer"
    env = {
        **os.environ,
        # GOPATH mode: the Debian source tree resolves imports with no module proxy.
        "GO111MODULE": "off",
        "GOPATH": f"{out_dir / 'gopath'}{os.pathsep}{GOCODE}",
        "GOCACHE": str(out_dir / "gocache"),
        "GOFLAGS": "",
        "GOPROXY": "off",
    }
    if shutil.which("gcc") is None:
        env["CGO_ENABLED"] = "0"
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_SOURCE,
        env=env,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"go build of {GO_SOURCE} failed:\n{done.stderr.decode(errors='replace')}")
    return binary


@pytest.fixture(scope="session")
def spdypeer(tmp_path_factory: pytest.TempPathFactory) -> SpdyPeer:
    """The Go spdystream test peer, built once per session (skips if Go is absent)."""
    return SpdyPeer(_build(tmp_path_factory.mktemp("spdypeer")))
