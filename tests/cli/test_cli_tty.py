"""`muxstream exec -it` on a real pseudo-terminal: raw mode, resize, exit code."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

from .conftest import TIMEOUT, Served, client_env


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def read_until(fd: int, pattern: bytes, seen: bytearray, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if re.search(pattern, seen):
            return True
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return bool(re.search(pattern, seen))
            if not chunk:
                break
            seen += chunk
    return bool(re.search(pattern, seen))


def wait_for_size(fd: int, size: bytes, seen: bytearray, deadline: float) -> None:
    while not read_until(fd, size, seen, min(deadline, time.monotonic() + 1)):
        assert time.monotonic() < deadline, seen
        os.write(fd, b"\r")  # ask the remote shell for its size again


def test_exec_tty_follows_the_window_size_and_passes_the_exit_code(server: Served) -> None:
    master, slave = os.openpty()
    set_size(master, 31, 101)

    def become_terminal_owner() -> None:  # in the child, after setsid
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    script = "stty size; while read line; do stty size; done; exit 5"
    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "exec", "-it", "--", "sh", "-c", script],
        stdin=slave, stdout=slave, stderr=slave, env=client_env(server),
        start_new_session=True, preexec_fn=become_terminal_owner,
    )
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        # The initial size travels right after the streams open and may reach the
        # remote terminal after the shell's first `stty size` (kubectl has the same
        # race): press Enter until the shell reports it.
        wait_for_size(master, b"31 101", seen, deadline)
        set_size(master, 42, 123)  # the kernel sends SIGWINCH to the client
        wait_for_size(master, b"42 123", seen, deadline)
        os.write(master, b"\x04")  # ^D: the raw local terminal passes it on -> EOF remotely
        assert process.wait(timeout=TIMEOUT) == 5
        # Our terminal is back in cooked mode (echo on) after the command.
        assert termios.tcgetattr(master)[3] & termios.ECHO
    finally:
        process.kill()
        process.wait()
        os.close(master)
