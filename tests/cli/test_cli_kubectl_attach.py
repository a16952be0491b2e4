"""`kubectl attach -it demo` against `muxstream serve --attach-tty` (issue 14, item 9):
the pod's container says it has a terminal, ^D ends the session; without a
terminal, `attach -i` with piped stdin ends when stdin does."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    TIMEOUT,
    TOKEN,
    Served,
    cli_env,
    client_env,
    muxstream,
    start_server,
    stop_server,
    write_tls_files,
)

KUBECTL = shutil.which("kubectl")


@pytest.fixture
def tty_server(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    pem, ca_pem = write_tls_files(tmp_path)
    served = start_server("--cert", str(pem), "--key", str(pem), "--attach-tty",
                          env=cli_env(MUXSTREAM_TOKEN=TOKEN))
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: mux
  cluster: {{server: "https://{served.address}", certificate-authority: "{ca_pem}"}}
users:
- name: mux
  user: {{token: {TOKEN}}}
contexts:
- name: mux
  context: {{cluster: mux, user: mux, namespace: default}}
current-context: mux
""")
    try:
        yield served, kubeconfig
    finally:
        stop_server(served)


def _read_until(fd: int, needle: bytes, seen: bytearray, deadline: float) -> bool:
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return needle in seen


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_attach_it_gets_a_terminal_and_ctrl_d_ends_it(
    tty_server: tuple[Served, Path], tmp_path: Path
) -> None:
    assert KUBECTL is not None
    _served, kubeconfig = tty_server
    base = [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}"]
    spec = subprocess.run([*base, "get", "pod", "demo", "-o",
                           "jsonpath={.spec.containers[0].tty} {.spec.containers[0].stdin}"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (spec.returncode, spec.stdout) == (0, "true true"), spec.stderr
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*base, "attach", "-it", "demo"], stdin=terminal,
                               stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    seen = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        # cat on the server's pty echoes the line (the pty's echo, then cat's copy).
        while not _read_until(controller, b"attached-line\r\nattached-line", seen,
                              min(deadline, time.monotonic() + 1)):
            assert time.monotonic() < deadline and process.poll() is None, seen
            os.write(controller, b"attached-line\r")
        assert b"did not allocate one" not in seen, seen
        os.write(controller, b"\x04")  # ^D: end of input for cat, which exits
        assert process.wait(TIMEOUT) == 0, seen
    finally:
        process.kill()
        os.close(controller)


def test_attach_with_piped_stdin_ends_when_stdin_ends(server: Served) -> None:
    # `serve` attaches to `cat`: stdin's EOF reaches it, it exits, the session ends.
    result = muxstream("attach", "-i", input=b"one line\n", env=client_env(server), timeout=30)
    assert (result.returncode, result.stdout) == (0, b"one line\n"), result.stderr
    spdy = muxstream("attach", "-i", "--transport", "spdy", input=b"again\n",
                     env=client_env(server), timeout=30)
    assert (spdy.returncode, spdy.stdout) == (0, b"again\n"), spdy.stderr
