"""`muxstream serve` as an attacker meets it: start-up warnings, tokens, limits."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from muxstream._cli import _mux, _service

from .conftest import (
    TIMEOUT,
    TOKEN,
    Served,
    cli_env,
    client_env,
    muxstream,
    start_server,
    stop_server,
)

ROOT = Path(__file__).resolve().parents[2]


def test_no_auth_start_up_says_every_local_user_can_run_commands() -> None:
    served = start_server("--insecure-no-auth")
    code, output = stop_server(served)
    assert code == 0, output
    lines = [line for line in output.splitlines() if "every local user" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith("muxstream serve: warning: no authentication on 127.0.0.1:")
    assert "can run commands as" in lines[0]


# --- the token never on a command line -------------------------------------------------


@pytest.mark.parametrize("token", ["spawned-token-0123456789", "-starts-with-a-dash-0123456789"])
async def test_a_spawned_server_gets_its_token_from_the_environment_never_argv(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """demo and bench start `serve`: other local users read /proc/PID/cmdline."""
    started: list[trio.Process] = []
    real = trio.lowlevel.open_process

    async def spy(*args: Any, **kwargs: Any) -> trio.Process:
        process = await real(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(trio.lowlevel, "open_process", spy)
    with trio.fail_after(TIMEOUT):
        async with _mux.spawned_server(token) as address:
            (process,) = started
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            assert token.encode() not in cmdline
            assert b"--token" not in cmdline
            conn = _mux.client_args(address, token)
            async with _mux.client_session(conn) as session:
                assert await _service.echo(session, token, b"hi") == b"hi"


def test_a_generated_token_never_goes_to_a_log(tmp_path: Path) -> None:
    # stdout is a pipe here, as under a service manager that keeps a journal: the
    # token goes to a file only this user can read, and only its path is printed.
    served = start_server(env=cli_env(TMPDIR=str(tmp_path)))
    try:
        [path] = list(tmp_path.glob("muxstream-token-*"))
        assert path.stat().st_mode & 0o777 == 0o600
        token = path.read_text().strip()
        assert len(token) >= 16 and token not in served.banner
        assert f"generated a token in {path}" in served.banner
        env = cli_env(MUXSTREAM_ADDRESS=served.address, MUXSTREAM_TOKEN=token)
        assert muxstream("ping", "-c", "1", env=env).returncode == 0
    finally:
        _code, output = stop_server(served)
    assert token not in output
    assert not path.exists()  # removed when serve ends


def test_a_generated_token_is_shown_on_a_terminal() -> None:
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "serve", "--address", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.DEVNULL, env=cli_env(),
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while b"listening on" not in seen and time.monotonic() < deadline:
            seen += os.read(controller, 4096)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(TIMEOUT)
        os.close(controller)
    assert b"generated a token: export MUXSTREAM_TOKEN=" in seen, seen


def test_token_file_is_read_and_must_not_be_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    served = start_server("--token-file", str(path))
    try:
        assert "generated a token" not in served.banner
        env = cli_env(MUXSTREAM_ADDRESS=served.address, MUXSTREAM_TOKEN=TOKEN)
        assert muxstream("ping", "-c", "1", env=env).returncode == 0
        wrong = cli_env(MUXSTREAM_ADDRESS=served.address, MUXSTREAM_TOKEN=TOKEN + "x")
        assert muxstream("ping", "-c", "1", env=wrong).returncode == 1
    finally:
        stop_server(served)
    path.chmod(0o644)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    for argv, message in (
        (["--token-file", str(path)], "other users can access it (mode 644); run chmod 600"),
        (["--token-file", str(tmp_path / "missing")], "No such file or directory"),
        (["--token-file", str(empty)], "the file is empty"),
        (["--token-file", str(empty), "--token", TOKEN], "not both"),
    ):
        result = muxstream("serve", "-a", "127.0.0.1:0", *argv)
        assert result.returncode == 1, argv
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, lines)


def test_a_token_on_the_command_line_gets_a_warning() -> None:
    served = start_server("--token", TOKEN)
    _code, output = stop_server(served)
    assert "--token on the command line is visible to every local user" in output


def test_commands_do_not_inherit_the_server_token() -> None:
    served = start_server(env=cli_env(MUXSTREAM_TOKEN=TOKEN, MUXSTREAM_OTHER="kept"))
    try:
        result = muxstream("exec", "--", "env", env=client_env(served))
        assert result.returncode == 0, result.stderr
        assert b"MUXSTREAM_OTHER=kept" in result.stdout  # the rest is inherited
        assert b"MUXSTREAM_TOKEN" not in result.stdout
        assert TOKEN.encode() not in result.stdout
    finally:
        stop_server(served)


def test_the_docs_never_put_a_token_on_serve_s_command_line() -> None:
    from .test_cli_documented_commands import LINES, argv_of

    serve_lines = [line for _where, line in LINES if argv_of(line)[0] == "serve"]
    assert serve_lines
    offending = [line for line in serve_lines if "--token" in argv_of(line)]
    assert offending == []
    text = (ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in (ROOT / "examples").glob("*.py")
    )
    assert "serve --token" not in text


# --- no orphans ------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_commands_die_when_the_server_is_sigkilled() -> None:
    served = start_server(env=cli_env(MUXSTREAM_TOKEN=TOKEN))
    client = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "exec", "--", "sh", "-c", "echo $$; exec sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=cli_env(MUXSTREAM_ADDRESS=served.address, MUXSTREAM_TOKEN=TOKEN),
    )
    pid = 0
    try:
        assert client.stdout is not None
        pid = int(client.stdout.readline())
        assert alive(pid)
        served.process.kill()  # SIGKILL: no cleanup code runs
        served.process.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(pid), "the command outlived the SIGKILLed server"
    finally:
        client.kill()
        client.communicate()
        served.process.kill()
        served.process.communicate()
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# --- token hygiene ---------------------------------------------------------------------


def test_serve_refuses_a_short_token_in_one_line() -> None:
    for argv, env in ((["--token", "s3cret"], cli_env()),
                      ([], cli_env(MUXSTREAM_TOKEN="fifteen-chars-x"))):
        result = muxstream("serve", "-a", "127.0.0.1:0", *argv, env=env)
        assert result.returncode == 1
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "at least 16 characters" in lines[0], lines


def test_serve_prints_an_audit_line_per_exec_at_the_default_verbosity() -> None:
    served = start_server(env=cli_env(MUXSTREAM_TOKEN=TOKEN))
    try:
        result = muxstream("exec", "--", "sh", "-c", "echo hi; exit 4", env=client_env(served))
        assert result.returncode == 4
    finally:
        _code, output = stop_server(served)
    lines = [line for line in output.splitlines() if line.startswith("muxstream serve: audit: ")]
    assert len(lines) == 1, output
    assert lines[0].startswith(
        "muxstream serve: audit: exec argv=['sh', '-c', 'echo hi; exit 4'] peer=127.0.0.1:"
    )
    assert "exit=4" in lines[0] and "stdout_bytes=3" in lines[0]
    assert TOKEN not in output


# --- port-forward policy -----------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--no-port-forward"], ["--allow", "true"]])
async def test_serve_can_refuse_every_port_forward(argv: list[str]) -> None:
    from muxstream.remote import RemoteEndpoint, RemoteError, open_port_forward

    served = start_server(*argv, env=cli_env(MUXSTREAM_TOKEN=TOKEN))
    try:
        endpoint = RemoteEndpoint(f"http://{served.address}", token=TOKEN, transport="spdy")
        with trio.fail_after(TIMEOUT), pytest.raises(RemoteError, match="disabled"):
            async with open_port_forward(endpoint, "demo"):
                pass
    finally:
        stop_server(served)


# --- limits: descriptors, floods -------------------------------------------------------


def start_server_with_fd_limit(soft: int, hard: int) -> Served:
    """`muxstream serve` started with RLIMIT_NOFILE (soft, hard); token in the env."""
    import re
    import resource

    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "serve", "--address", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=cli_env(MUXSTREAM_TOKEN=TOKEN),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    match = re.search(r"listening on [\d.]+:(\d+)", banner)
    if match is None:
        process.kill()
        raise AssertionError(f"serve did not start: {banner}{process.communicate()}")
    return Served(process, int(match.group(1)), banner)


def open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def test_serve_raises_its_descriptor_limit_but_not_its_commands() -> None:
    import resource

    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    served = start_server_with_fd_limit(256, hard)
    try:
        assert open_files_limits(served.process.pid) == (hard, hard)
        result = muxstream("exec", "--", "sh", "-c", "ulimit -n", env=client_env(served))
        assert result.stdout.strip() == b"256"  # select()-era programs keep their limit
    finally:
        stop_server(served)


def test_a_client_with_the_token_gets_in_during_a_socket_flood() -> None:
    """300 idle sockets against a server with 128 descriptors: the flood must not
    keep a client with the token out (it used to wait for the idle ones to time out)."""
    import socket

    served = start_server_with_fd_limit(128, 128)
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", served.port)))
        start = time.monotonic()
        result = muxstream("exec", "--", "echo", "in", env=client_env(served), timeout=20)
        assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
        assert time.monotonic() - start < 15
    finally:
        for sock in flood:
            sock.close()
        code, output = stop_server(served)
    assert code == 0, output
