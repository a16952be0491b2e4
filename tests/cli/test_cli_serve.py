"""`muxstream serve`: shutdown, TLS, tokens; `port-forward` through it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from .conftest import (
    TIMEOUT,
    TOKEN,
    Served,
    cli_env,
    client_env,
    muxstream,
    muxstream_many,
    start_server,
    stop_server,
    write_tls_files,
)


def test_sigint_closes_live_sessions_gracefully_and_exits_0() -> None:
    served = start_server("--token", TOKEN)
    client = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "ping", "-c", "100000", "-i", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(served),
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().startswith(b"ping 1: rtt")
        code, output = stop_server(served, signal.SIGINT)
        assert code == 0, output
        assert "SIGINT: closing 1 session(s) gracefully" in output
        _out, err = client.communicate(timeout=TIMEOUT)
    finally:
        client.kill()
    assert client.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines == ["muxstream ping: error: the server closed the session"], lines


def test_sigterm_without_sessions_exits_0() -> None:
    served = start_server("--token", TOKEN)
    code, output = stop_server(served, signal.SIGTERM)
    assert code == 0, output


def test_serve_without_a_token_generates_one() -> None:
    served = start_server()
    try:
        # stdout is a pipe: the token is in a file only we can read (see test_cli_serve_security).
        assert "generated a token in " in served.banner
        path = served.banner.split("generated a token in ")[1].split()[0]
        token = Path(path).read_text().strip()
        env = cli_env(MUXSTREAM_ADDRESS=served.address, MUXSTREAM_TOKEN=token)
        assert muxstream("ping", "-c", "1", env=env).returncode == 0
        refused = muxstream("ping", "-c", "1", env=cli_env(MUXSTREAM_ADDRESS=served.address))
        assert refused.returncode == 1
        assert b"no token given: set MUXSTREAM_TOKEN or --token" in refused.stderr
    finally:
        stop_server(served)


def test_tls_serves_sessions_and_exec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server_pem, ca_pem = write_tls_files(tmp_path)
    pem = str(server_pem)
    served = start_server("--token", TOKEN, "--cert", pem, "--key", pem)
    try:
        cacert = ["--cacert", str(ca_pem)]
        echo, ws, exec_, untrusted = muxstream_many(
            [
                ["echo", *cacert, "over tls"],
                ["echo", "--transport", "websocket", *cacert, "wss"],
                ["exec", *cacert, "--", "echo", "secure"],
                ["ping", "-c", "1", "--tls"],
            ],
            env=client_env(served),
        )
        assert echo.returncode == 0, echo.stderr
        assert echo.stdout.startswith(b"over tls\n")
        assert ws.returncode == 0, ws.stderr
        assert (exec_.returncode, exec_.stdout) == (0, b"secure\n")
        assert untrusted.returncode == 1
        assert b"TLS" in untrusted.stderr and b"Traceback" not in untrusted.stderr
    finally:
        stop_server(served)


def test_port_forward_reaches_a_port_on_the_server(server: Served) -> None:
    # Forward a local port to the server's own port, then talk muxstream through it.
    forward = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "port-forward", f":{server.port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env(server), text=True,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:"), line
        local = line.split()[2]
        echoed = muxstream("echo", "-a", local, "-n", "3", "forwarded", env=client_env(server))
        assert echoed.returncode == 0, echoed.stderr
        assert b"3 stream(s) echoed, all OK" in echoed.stdout
        forward.send_signal(signal.SIGINT)
        assert forward.wait(timeout=TIMEOUT) == 0
    finally:
        forward.kill()
        forward.communicate()
