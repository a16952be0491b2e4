"""Fixtures for the CLI tests: the `muxstream` command run as a user runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TOKEN = "cli-test-token-0123456789"
#: seconds any single CLI invocation may take before the test fails.
TIMEOUT = 60


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    banner: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUXSTREAM_")}
    env.update(extra)
    return env


def muxstream(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m muxstream ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "muxstream", *args],
        input=input if input is not None else b"",
        capture_output=True,
        env=env if env is not None else cli_env(),
        timeout=timeout,
    )


def muxstream_many(
    runs: list[list[str]], *, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> list[subprocess.CompletedProcess[bytes]]:
    """Run several ``python -m muxstream`` invocations at once (saves start-up time)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "muxstream", *argv], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env if env is not None else cli_env(),
        )
        for argv in runs
    ]
    results = []
    for argv, process in zip(runs, processes, strict=True):
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            process.kill()
        results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return results


def start_server(*args: str, env: dict[str, str] | None = None) -> Served:
    """Start ``muxstream serve --address 127.0.0.1:0 ARGS``; wait for its banner."""
    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "serve", "--address", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env if env is not None else cli_env(),
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner += line
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        if match:
            return Served(process, int(match.group(1)), banner)
    process.kill()
    errors = process.stderr.read() if process.stderr else ""
    raise AssertionError(f"serve did not start: {banner}{errors}")


def stop_server(served: Served, sig: int = signal.SIGINT) -> tuple[int, str]:
    if served.process.poll() is None:
        served.process.send_signal(sig)
    try:
        out, err = served.process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        served.process.kill()
        out, err = served.process.communicate()
    return served.process.returncode, (out or "") + (err or "")


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    """One `muxstream serve --token TOKEN` for a test module."""
    served = start_server("--token", TOKEN)
    try:
        yield served
    finally:
        stop_server(served)


def client_env(served: Served, **extra: str) -> dict[str, str]:
    return cli_env(**{"MUXSTREAM_ADDRESS": served.address, "MUXSTREAM_TOKEN": TOKEN, **extra})


def write_tls_files(folder: Path) -> tuple[Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 (ECDSA: fast to make),
    written as ``folder/server.pem`` (key and chain, for ``--cert``/``--key``)
    and ``folder/ca.pem`` (for ``--cacert``); the two paths."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    cert = ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA)
    pem, ca_pem = folder / "server.pem", folder / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    return pem, ca_pem


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CuttingProxy:
    """A TCP proxy that forwards ``limit`` bytes one way, then resets both sides
    (or, with ``stall``, stops forwarding that way and holds the connection).

    ``limit`` counts client->server bytes, or server->client with ``downstream``.

    It plays a peer that dies mid-transfer (a crash, a cable pulled): nothing is
    closed gracefully, both sockets are aborted with RST.
    """

    def __init__(
        self, upstream_port: int, limit: int, *, downstream: bool = False, stall: bool = False
    ) -> None:
        self.upstream_port = upstream_port
        self.downstream = downstream
        self.limit = limit
        self.stall = stall
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.cut = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for src, dst, counted in (
                (client, upstream, not self.downstream),
                (upstream, client, self.downstream),
            ):
                threading.Thread(target=self._pump, args=(src, dst, counted), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        forwarded = 0
        try:
            while data := src.recv(65536):
                if counted and forwarded + len(data) > self.limit:
                    if self.stall:  # a link that hangs: stop forwarding, close nothing
                        self.cut.set()
                        return
                    self._abort(src, dst)
                    return
                dst.sendall(data)
                forwarded += len(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            self._abort(src, dst)

    def _abort(self, *socks: socket.socket) -> None:
        self.cut.set()
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


class StallingProxy:
    """A TCP proxy that forwards ``limit`` bytes client -> server, then stops
    forwarding that way (server -> client still flows) without closing anything:
    a server that stopped reading, so an upload hangs mid-flight."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.upstream_port = upstream_port
        self.limit = limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stalled = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        forwarded = 0
        try:
            while data := src.recv(65536):
                if counted and forwarded + len(data) > self.limit:
                    self.stalled.set()
                    return  # stop reading: the client's sends back up and block
                dst.sendall(data)
                forwarded += len(data)
            dst.shutdown(socket.SHUT_WR)  # pass the FIN on, as a link that works does
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
