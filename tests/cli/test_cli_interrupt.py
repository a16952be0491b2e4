"""Ctrl-C (SIGINT) on client commands: the first says what it still waits for and
that a second stops at once, on a line of its own; the second stops at once
(issue 14, item 3). Commands run in subprocesses and get real signals."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import TIMEOUT, Served, StallingProxy, client_env

AGAIN = "press Ctrl-C again to stop at once"


def _interrupt(process: subprocess.Popen[bytes], after: float) -> tuple[int, bytes, float]:
    time.sleep(after)
    assert process.poll() is None, process.communicate()
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        _out, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    return process.returncode, err, time.monotonic() - start


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_first_ctrl_c_during_a_stalled_upload_says_so_and_stops(
    server: Served, tmp_path: Path, transport: str
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"\x5a" * (16 << 20))
    proxy = StallingProxy(server.port, limit=1 << 20)  # the server stops reading at 1 MiB
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "muxstream", "cp", "--transport", transport, str(source),
             f":{tmp_path / 'copy.bin'}", "-a", f"127.0.0.1:{proxy.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=client_env(server),
        )
        assert proxy.stalled.wait(TIMEOUT)
        code, err, took = _interrupt(process, 0.5)
    finally:
        proxy.close()
    lines = err.decode().splitlines()
    assert code == 130, err
    # Said at once, on a line of its own ...
    assert lines[0] == (
        f"muxstream cp: interrupted: stopping the copy and removing its temporary file; {AGAIN}"
    ), lines
    # ... then what became of the copy's temporary file, and nothing else.
    temporary = f"muxstream cp: removed the temporary file {tmp_path}/.copy.bin.muxstream-"
    assert len(lines) == 2 and lines[1].startswith(temporary), lines
    assert not [p for p in tmp_path.iterdir() if "copy.bin" in p.name]
    # It used to wait out the 10 s close timeout, silent. Over SPDY it now stops at
    # once; over WebSocket the stalled connection's close may still take up to the
    # close timeout (10 s), announced by the line above and cut short by a second Ctrl-C.
    assert took < (5 if transport == "spdy" else 25), took


def test_every_client_command_says_what_it_waits_for(server: Served) -> None:
    runs = [["ping", "-c", "1000", "-i", "0.05"], ["exec", "-i", "--", "sleep", "60"],
            ["attach", "-i"], ["demo", "--size", "64G"]]
    processes = [
        subprocess.Popen([sys.executable, "-m", "muxstream", *argv], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(server))
        for argv in runs
    ]
    time.sleep(3)
    for argv, process in zip(runs, processes, strict=True):
        code, err, took = _interrupt(process, 0)
        line = err.decode().splitlines()[-1]
        assert code == 130, (argv, err)
        assert line.startswith(f"muxstream {argv[0]}: interrupted: ") and line.endswith(AGAIN)
        assert b"Traceback" not in err and took < 15, (argv, took)


def test_the_progress_line_is_ended_before_the_message(server: Served) -> None:
    controller, terminal = pty.openpty()  # stderr on a terminal: bench draws its bar
    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "bench", "-a", server.address, "--size", "64G"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
        env=client_env(server),
    )
    os.close(terminal)
    seen = bytearray()
    deadline = time.monotonic() + TIMEOUT
    while b"MiB/s" not in seen and time.monotonic() < deadline:
        seen += os.read(controller, 4096)
    process.send_signal(signal.SIGINT)
    assert process.wait(TIMEOUT) == 130
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    text = seen.decode(errors="replace")
    before, _, _after = text.partition("muxstream bench: interrupted")
    assert _after, text
    assert before.endswith("\n") and "\r" in before, text  # the bar, then a newline


def test_second_ctrl_c_stops_at_once_while_cleanup_still_runs(tmp_path: Path) -> None:
    # A command whose cleanup after the first Ctrl-C takes long (shielded): the
    # second Ctrl-C must not wait for it.
    script = tmp_path / "slow_cleanup.py"
    script.write_text(textwrap.dedent("""
        import sys, trio
        from muxstream._cli._common import INTERRUPT
        from muxstream._cli._run import run_command

        async def main() -> int:
            INTERRUPT.waiting_for = "cleaning up slowly"
            try:
                print("ready", flush=True)
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(60)
            return 0

        sys.exit(run_command("slow", main, verbose=False))
    """))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGINT)
    time.sleep(1)
    assert process.poll() is None  # waiting for its cleanup, as it said
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=TIMEOUT)
    assert time.monotonic() - start < 5
    assert process.returncode == 130
    assert err.decode().splitlines() == [
        f"muxstream slow: interrupted: cleaning up slowly; {AGAIN}",
        "muxstream slow: stopped at once",
    ]
