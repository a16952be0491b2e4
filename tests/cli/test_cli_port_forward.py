"""port-forward when things go wrong, as kubectl users expect (issue 14, item 7):
it exits non-zero once the server is gone, and every line it prints is in the
CLI's one form. The server's shutdown line counts those connections too."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from .conftest import (
    TIMEOUT,
    TOKEN,
    Served,
    cli_env,
    client_env,
    free_port,
    start_server,
    stop_server,
)


def _forward(served: Served, *ports: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "port-forward", *ports],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(served), text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Forwarding from 127.0.0.1:"), (line, process.stderr)
    return process, line.split()[2]


def test_port_forward_exits_1_when_the_server_goes_away() -> None:
    served = start_server(env=cli_env(MUXSTREAM_TOKEN=TOKEN))
    forward, _local = _forward(served, f":{free_port()}")
    try:
        time.sleep(0.5)
        code, output = stop_server(served, signal.SIGTERM)
        assert code == 0, output
        # The shutdown line counts the port-forward connection, not just sessions.
        assert "SIGTERM: closing 0 session(s) gracefully, ending 1 exec/attach/cp/port-forward " \
               "connection(s)" in output, output
        start = time.monotonic()
        _out, err = forward.communicate(timeout=TIMEOUT)
    finally:
        forward.kill()
    assert forward.returncode == 1, err
    assert time.monotonic() - start < 15
    assert err.splitlines() == [err.splitlines()[0]], err
    assert err.startswith("muxstream port-forward: error: lost the connection to pod demo: "), err


def test_port_forward_problems_are_told_in_the_cli_form(server: Served) -> None:
    closed = free_port()  # nothing listens there on the server side
    forward, local = _forward(server, f":{closed}")
    try:
        host, port = local.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
            conn.settimeout(TIMEOUT)
            assert conn.recv(100) == b""  # the server could not reach the port
        forward.send_signal(signal.SIGINT)
        _out, err = forward.communicate(timeout=TIMEOUT)
    finally:
        forward.kill()
    assert forward.returncode == 0, err
    lines = err.splitlines()
    assert lines, "the failed connection was not reported"
    for line in lines:
        assert line.startswith("muxstream port-forward: warning: "), line  # no log format
        assert "WARNING" not in line


def test_a_local_port_in_use_is_named(server: Served) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "muxstream", "port-forward", f"{port}:80"],
            capture_output=True, text=True, env=client_env(server), timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"muxstream port-forward: error: cannot listen on 127.0.0.1:{port}: the address is "
        "already in use"
    ), result.stderr

