"""The examples and the tutorial at their edges (issue 14, item 11): servers end
on Ctrl-C without a traceback, clients say in one line that no server runs,
`exec -it -- calc` can be used and left, and websocket_echo speaks the command
line's path. Everything runs in subprocesses, as a user runs it."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 60
TOKEN = "example-edges-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUXSTREAM_")}
    env["MUXSTREAM_TOKEN"] = TOKEN
    return env


def _start(argv: list[str], ready: str) -> tuple[subprocess.Popen[str], re.Match[str]]:
    process = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               env=_env())
    assert process.stdout is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := re.search(ready, line):
            return process, match
    process.kill()
    raise AssertionError(f"{argv} did not start: {process.communicate()}")


def _tutorial_blocks() -> list[str]:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    section = text.split("## 4. Your own server and client", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[:2]


SERVERS = [
    ([str(EXAMPLES / "echo_server.py"), "--port", "0"], r"listening on"),
    ([str(EXAMPLES / "websocket_echo.py"), "--serve", "--port", "0"], r"serving WebSocket"),
    ([str(EXAMPLES / "custom_backend.py"), "--serve", "--port", "0"], r"listening on"),
    ([str(EXAMPLES / "exec_server.py"), "--port", "0"], r"listening on"),
]


@pytest.mark.parametrize(("argv", "ready"), SERVERS, ids=[Path(a[0]).name for a, _ in SERVERS])
def test_example_servers_end_ctrl_c_without_a_traceback(argv: list[str], ready: str) -> None:
    process, _ = _start(argv, ready)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=TIMEOUT)
    assert "Traceback" not in err and "ExceptionGroup" not in err, err
    assert process.returncode in (0, 130), err


def test_the_tutorial_server_ends_ctrl_c_and_its_client_says_no_server(tmp_path: Path) -> None:
    port = _free_port()  # the tutorial's 7100 may be taken on a shared machine
    server_code, client_code = (code.replace("7100", str(port)) for code in _tutorial_blocks())
    (tmp_path / "client.py").write_text(client_code)
    client = subprocess.run([sys.executable, str(tmp_path / "client.py")], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert "Traceback" not in client.stderr, client.stderr
    assert "is server.py running?" in client.stdout, client.stdout
    (tmp_path / "server.py").write_text(server_code)
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:  # wait until it accepts
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    ran = subprocess.run([sys.executable, str(tmp_path / "client.py")], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert "b'hello, streams'" in ran.stdout, ran
    server.send_signal(signal.SIGINT)
    _out, err = server.communicate(timeout=TIMEOUT)
    assert "Traceback" not in err, err


def test_example_clients_say_in_one_line_that_no_server_runs() -> None:
    port = _free_port()
    echo = subprocess.run([sys.executable, str(EXAMPLES / "echo_client.py"), "--port", str(port)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    run = subprocess.run([sys.executable, str(EXAMPLES / "exec_client.py"), "--url",
                          f"http://127.0.0.1:{port}", "--", "true"],
                         capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    for result, name in ((echo, "echo_client"), (run, "exec_client")):
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}: "), result.stderr
        assert "running" in lines[0], lines[0]


def test_websocket_echo_answers_the_command_line_on_its_path() -> None:
    process, _ = _start([str(EXAMPLES / "websocket_echo.py"), "--serve", "--port", "0"],
                        r"ws://127\.0\.0\.1:(\d+)/muxstream")
    try:
        port = _.group(1)
        result = subprocess.run(
            [sys.executable, "-m", "muxstream", "echo", "--transport", "websocket", "-a",
             f"127.0.0.1:{port}", "through the example"],
            capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("through the example\n")


def test_calc_on_a_terminal_can_be_used_and_left() -> None:
    process, match = _start([str(EXAMPLES / "custom_backend.py"), "--serve", "--port", "0"],
                            r"listening on 127\.0\.0\.1:(\d+)")
    controller, terminal = pty.openpty()
    client = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "exec", "-a", f"127.0.0.1:{match.group(1)}", "-it",
         "--", "calc"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=_env(), start_new_session=True,
    )
    os.close(terminal)
    seen = bytearray()

    def read_until(needle: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while needle not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    seen.extend(os.read(controller, 4096))
                except OSError:
                    break
        assert needle in seen, bytes(seen)

    try:
        read_until(b"calc> ")
        os.write(controller, b"2 ** 1x\x7f0\r")  # a typo, erased with Backspace
        read_until(b"1024\r\ncalc> ")
        assert b"2 ** 1x\b \b0" in seen  # what was typed is shown, and erased
        os.write(controller, b"\x04")  # ^D on an empty line leaves
        assert client.wait(TIMEOUT) == 0, bytes(seen)
    finally:
        client.kill()
        os.close(controller)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=TIMEOUT)
