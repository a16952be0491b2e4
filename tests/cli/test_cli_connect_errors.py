"""Connecting fails with a line that names the phase, the address and the likely
cause, within --timeout (issue 14, items 4 and 6). Every command runs as a user
runs it, in a subprocess."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
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
from .test_cli_errors import assert_one_line_error

#: What an h11 or OpenSSL message leaks when it reaches the user unexplained.
INTERNALS = ("h11", "ConnectionClosed", "SEND_RESPONSE", "WRONG_VERSION_NUMBER", "_ssl.c")


def _no_internals(line: str) -> None:
    for word in INTERNALS:
        assert word not in line, line


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield int(listener.getsockname()[1])


@pytest.fixture
def unreachable_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so a TCP
    connect hangs as it does towards a firewall that drops packets."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    server_pem, ca_pem = write_tls_files(tmp_path_factory.mktemp("tls"))
    pem = str(server_pem)
    served = start_server("--token", TOKEN, "--cert", pem, "--key", pem)
    try:
        yield served, ca_pem
    finally:
        stop_server(served)


REMOTE_COMMANDS = [
    ["exec", "--", "true"],
    ["attach", "-i"],
    ["cp", "/etc/hostname", ":/tmp/muxstream-never-written"],
    ["port-forward", ":80"],
]


def test_timeout_bounds_the_upgrade_of_every_remote_command(silent_port: int) -> None:
    # They used to wait a fixed 10 s and then say "TLS/handshake failed" without TLS.
    runs = [[argv[0], "--timeout", "1", *argv[1:]] for argv in REMOTE_COMMANDS]
    env = cli_env(MUXSTREAM_ADDRESS=f"127.0.0.1:{silent_port}", MUXSTREAM_TOKEN=TOKEN)
    start = time.monotonic()
    results = muxstream_many(runs, env=env)
    assert time.monotonic() - start < 9  # four 1 s timeouts, in parallel, plus start-up
    for argv, result in zip(runs, results, strict=True):
        line = assert_one_line_error(result, argv[0], "timed out after 1 s",
                                     f"127.0.0.1:{silent_port}", "answer the upgrade request",
                                     "if the server speaks TLS, add --tls")
        _no_internals(line)


def test_timeout_bounds_the_tls_handshake_and_the_tcp_connect(
    silent_port: int, unreachable_port: int
) -> None:
    runs = [
        ["exec", "--tls", "--timeout", "1", "-a", f"127.0.0.1:{silent_port}", "--", "true"],
        ["ping", "--tls", "--timeout", "1", "-a", f"127.0.0.1:{silent_port}"],
        ["exec", "--timeout", "1", "-a", f"127.0.0.1:{unreachable_port}", "--", "true"],
        ["ping", "--timeout", "1", "-a", f"127.0.0.1:{unreachable_port}"],
    ]
    tls_exec, tls_ping, tcp_exec, tcp_ping = muxstream_many(runs, env=cli_env())
    for result, command in ((tls_exec, "exec"), (tls_ping, "ping")):
        assert_one_line_error(result, command, "timed out after 1 s in the TLS handshake")
    for result, command in ((tcp_exec, "exec"), (tcp_ping, "ping")):
        assert_one_line_error(result, command, "timed out after 1 s connecting to", "(TCP)")


def test_a_raw_session_that_gets_no_hello_suggests_tls(silent_port: int) -> None:
    result = muxstream("ping", "--timeout", "1", "-a", f"127.0.0.1:{silent_port}", env=cli_env())
    assert_one_line_error(result, "ping", "answer the hello", "add --tls")


def test_plain_client_to_a_tls_server_is_told_to_add_tls(tls_server: tuple[Served, Path]) -> None:
    served, _ca = tls_server
    runs = [
        ["exec", "--timeout", "5", "--", "true"],
        ["exec", "--transport", "spdy", "--timeout", "5", "--", "true"],
        ["echo", "--transport", "websocket", "hi"],
        ["echo", "--transport", "upgrade", "hi"],
        ["port-forward", ":80"],
    ]
    for argv, result in zip(runs, muxstream_many(runs, env=client_env(served)), strict=True):
        line = assert_one_line_error(result, argv[0], "speaks TLS: add --tls", served.address)
        _no_internals(line)


def test_tls_client_to_a_plain_server_is_told_it_does_not_speak_tls(
    server: Served, tls_server: tuple[Served, Path]
) -> None:
    _served, ca = tls_server
    runs = [
        ["ping", "-c", "1", "--cacert", str(ca)],
        ["echo", "--transport", "websocket", "--tls", "hi"],
        ["exec", "--tls", "--", "true"],
    ]
    for argv, result in zip(runs, muxstream_many(runs, env=client_env(server)), strict=True):
        line = assert_one_line_error(result, argv[0], "does not speak TLS: drop --tls")
        _no_internals(line)


def test_an_untrusted_certificate_points_to_cacert(tls_server: tuple[Served, Path]) -> None:
    served, _ca = tls_server
    result = muxstream("ping", "-c", "1", "--tls", env=client_env(served))
    assert_one_line_error(result, "ping", "not trusted", "--cacert FILE")


def test_errors_name_the_address_in_use_and_the_missing_file(server: Served) -> None:
    in_use, no_cert, no_key, no_cacert = muxstream_many([
        ["serve", "-a", server.address],
        ["serve", "-a", "127.0.0.1:0", "--cert", "/nonexistent/srv.pem"],
        ["serve", "-a", "127.0.0.1:0", "--cert", "/etc/hostname",
         "--key", "/nonexistent/srv.key"],
        ["ping", "--cacert", "/nonexistent/ca.pem"],
    ], env=cli_env(MUXSTREAM_TOKEN=TOKEN))
    assert_one_line_error(in_use, "serve", f"cannot listen on {server.address}",
                          "already in use")
    assert_one_line_error(no_cert, "serve", "--cert /nonexistent/srv.pem: no such file")
    assert_one_line_error(no_key, "serve", "--key /nonexistent/srv.key: no such file")
    assert_one_line_error(no_cacert, "ping", "--cacert /nonexistent/ca.pem: no such file")


def test_an_unresolvable_name_is_named_with_where_it_came_from() -> None:
    from_env, url_in_env = (
        muxstream_many([["ping"]], env=cli_env(MUXSTREAM_ADDRESS=address))[0]
        for address in ("no-such-host.invalid:7000", "http://localhost:7000")
    )
    assert_one_line_error(from_env, "ping", "'no-such-host.invalid'",
                          "it came from MUXSTREAM_ADDRESS=no-such-host.invalid:7000")
    assert_one_line_error(url_in_env, "ping", "MUXSTREAM_ADDRESS", "not a URL",
                          "localhost:7000", status=2)
    url_flag = muxstream("exec", "-a", "https://example.invalid:7000", "--", "true",
                         env=cli_env())
    assert_one_line_error(url_flag, "exec", "not a URL", "example.invalid:7000 and --tls",
                          status=2)


def test_no_token_says_where_to_give_one(server: Served) -> None:
    env = cli_env(MUXSTREAM_ADDRESS=server.address)
    runs = [["ping", "-c", "1"], ["exec", "--", "true"], ["echo", "--transport", "websocket"]]
    for argv, result in zip(runs, muxstream_many(runs, env=env), strict=True):
        line = assert_one_line_error(result, argv[0], "no token given",
                                     "set MUXSTREAM_TOKEN or --token")
        assert "bad token" not in line


def test_a_stream_limit_is_shown_as_a_limit(server: Served) -> None:
    result = muxstream("echo", "--streams", "3000", "x", env=client_env(server))
    if result.returncode == 0:
        pytest.fail("3000 streams at once should exceed the server's limits")
    line = assert_one_line_error(result, "echo", "limit")
    assert "REFUSED_STREAM" not in line and "connection lost" not in line
