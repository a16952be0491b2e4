"""Expected failures end with one readable line on stderr and exit status 1."""

from __future__ import annotations

import pytest

from .conftest import (
    TOKEN,
    CuttingProxy,
    Served,
    cli_env,
    client_env,
    free_port,
    muxstream,
    muxstream_many,
)


def assert_one_line_error(
    result: object, command: str, *needles: str, status: int = 1
) -> str:
    returncode = result.returncode  # type: ignore[attr-defined]
    stderr = result.stderr.decode()  # type: ignore[attr-defined]
    assert returncode == status, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"muxstream {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_nothing_listening_is_one_line() -> None:
    env = cli_env(MUXSTREAM_ADDRESS=f"127.0.0.1:{free_port()}", MUXSTREAM_TOKEN=TOKEN)
    runs = [["echo", "hi"], ["ping", "-c", "1"], ["exec", "--", "true"],
            ["cp", "/etc/hostname", ":/tmp/x"], ["port-forward", "8080:80"]]
    for argv, result in zip(runs, muxstream_many(runs, env=env), strict=True):
        assert_one_line_error(result, argv[0], "connect")


def test_unresolvable_host_is_one_line() -> None:
    result = muxstream("ping", "-a", "no-such-host.invalid:7000", env=cli_env())
    assert_one_line_error(result, "ping", "resolve")


def test_malformed_address_is_a_one_line_usage_error() -> None:
    result = muxstream("echo", "-a", "localhost:http", env=cli_env())
    assert_one_line_error(result, "echo", "bad address", status=2)


def test_bad_token_is_one_line_on_every_transport(server: Served) -> None:
    runs = [
        ["echo", "hi"],
        ["echo", "--transport", "websocket", "hi"],
        ["echo", "--transport", "upgrade", "hi"],
        ["ping", "-c", "1"],
        ["exec", "--", "true"],
        ["exec", "--transport", "spdy", "--", "true"],
        ["cp", "/etc/hostname", ":/tmp/x"],
    ]
    env = client_env(server, MUXSTREAM_TOKEN="not-the-token")
    for argv, result in zip(runs, muxstream_many(runs, env=env), strict=True):
        assert_one_line_error(result, argv[0], "bad token")


def test_missing_local_file_for_cp(server: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = muxstream("cp", str(tmp_path / "absent"), ":/tmp/absent", env=client_env(server))
    assert_one_line_error(result, "cp", "no such file")


def test_refused_command_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .conftest import start_server, stop_server

    served = start_server("--token", TOKEN, "--allow", "echo")
    try:
        result = muxstream("exec", "--", "id", env=client_env(served))
        assert_one_line_error(result, "exec", "not allowed")
    finally:
        stop_server(served)


def test_peer_gone_mid_bulk_transfer(server: Served) -> None:
    proxy = CuttingProxy(server.port, limit=4 << 20)
    try:
        result = muxstream(
            "bench", "--no-spawn", "-a", f"127.0.0.1:{proxy.port}", "--size", "256M",
            env=client_env(server),
        )
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert_one_line_error(result, "bench", "connection lost")


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_peer_gone_mid_cp_download(  # type: ignore[no-untyped-def]
    server: Served, tmp_path, transport: str
) -> None:
    remote = tmp_path / "big.bin"
    remote.write_bytes(b"\x5a" * (32 << 20))
    proxy = CuttingProxy(server.port, limit=2 << 20, downstream=True)
    try:
        result = muxstream(
            "cp", f":{remote}", str(tmp_path / "copy.bin"), "-a", f"127.0.0.1:{proxy.port}",
            "--transport", transport, env=client_env(server),
            timeout=60,
        )
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert_one_line_error(result, "cp", "connection lost")


def test_peer_gone_mid_cp_upload(server: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "big.bin"
    source.write_bytes(b"\x5a" * (32 << 20))
    (tmp_path / "dest").mkdir()
    proxy = CuttingProxy(server.port, limit=2 << 20)
    try:
        result = muxstream(
            "cp", str(source), f":{tmp_path}/dest/copy.bin", "-a", f"127.0.0.1:{proxy.port}",
            env=client_env(server),
        )
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    # No partial file under the final name, nor a temporary one left behind; and
    # the error line says so.
    assert_one_line_error(result, "cp", "connection lost", "removed the temporary file")
    assert list((tmp_path / "dest").iterdir()) == []
