"""Each `muxstream` command's main path, as a user runs it (subprocesses)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from muxstream._cli import main

from .conftest import TOKEN, Served, cli_env, client_env, muxstream

COMMANDS = ["serve", "echo", "ping", "exec", "attach", "cp", "port-forward", "bench", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"muxstream {command}" in out


def test_python_dash_m_prints_the_version() -> None:
    result = muxstream("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(b"muxstream 0.")


def test_version_says_which_implementation_runs() -> None:
    forced = muxstream("--version", env=cli_env(MUXSTREAM_NO_ACCEL="1"))
    assert b"(pure Python: MUXSTREAM_NO_ACCEL is set)" in forced.stdout
    default = muxstream("--version")  # cli_env() drops MUXSTREAM_* variables
    if importlib.util.find_spec("muxstream._speedups") is not None:
        assert b"(compiled C accelerator)" in default.stdout, default.stdout
    else:
        assert b"(pure Python: the compiled accelerator is not built)" in default.stdout


def test_echo_over_several_streams(server: Served) -> None:
    result = muxstream("echo", "-n", "5", "hello", env=client_env(server))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[:5] == [f"hello [{i}]" for i in range(1, 6)]
    assert "5 stream(s) echoed, all OK" in lines[-1]


@pytest.mark.parametrize("transport", ["upgrade", "websocket"])
def test_echo_over_http_transports(server: Served, transport: str) -> None:
    result = muxstream("echo", "--transport", transport, "--json", "hi", env=client_env(server))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"mismatched": [], "ok": True, "streams": 1}


def test_ping_reports_statistics_as_json(server: Served) -> None:
    result = muxstream("ping", "-c", "5", "-i", "0", "--json", env=client_env(server))
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["count"] == 5
    assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]


def test_address_and_token_options_override_the_environment(server: Served) -> None:
    env = client_env(server, MUXSTREAM_TOKEN="wrong")
    env["MUXSTREAM_ADDRESS"] = "127.0.0.1:1"
    result = muxstream("ping", "-c", "1", "-a", server.address, "--token", TOKEN, env=env)
    assert result.returncode == 0, result.stderr


def test_exec_passes_the_remote_exit_code_through(server: Served) -> None:
    env = client_env(server)
    ok = muxstream("exec", "--", "echo", "hi there", env=env)
    assert (ok.returncode, ok.stdout) == (0, b"hi there\n")
    failed = muxstream("exec", "--", "sh", "-c", "echo oops >&2; exit 7", env=env)
    assert (failed.returncode, failed.stderr) == (7, b"oops\n")
    spdy = muxstream("exec", "--transport", "spdy", "--", "sh", "-c", "exit 3", env=env)
    assert spdy.returncode == 3
    missing = muxstream("exec", "--", "no-such-command-here", env=env)
    assert missing.returncode == 127


def test_exec_with_stdin(server: Served) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    result = muxstream("exec", "-i", "--", "cat", input=data, env=client_env(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_cp_a_file_both_ways(server: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = client_env(server)
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(251)) * 20000)
    remote = str(tmp_path / "remote" / "payload.bin")
    (tmp_path / "remote").mkdir()
    up = muxstream("cp", str(source), f":{remote}", "--json", env=env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["digest_verified"] is True
    assert (tmp_path / "remote" / "payload.bin").read_bytes() == source.read_bytes()
    back = tmp_path / "back.bin"
    down = muxstream("cp", f"demo:{remote}", str(back), env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout == b"" and down.stderr == b""  # quiet when not on a terminal
    assert back.read_bytes() == source.read_bytes()


def test_cp_a_directory_both_ways(server: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = client_env(server)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.txt").write_text("beta\n")
    up = muxstream("cp", str(tree), f":{tmp_path / 'tree2'}", "--json", env=env)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["files"] == 2
    down = muxstream("cp", f":{tmp_path / 'tree2'}", str(tmp_path / "tree3"), env=env)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "tree3" / "sub" / "b.txt").read_text() == "beta\n"


def test_attach_talks_to_the_shared_process(server: Served) -> None:
    # The attach target (cat) outlives us, so stop the client once its echo is back.
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "muxstream", "attach", "-i"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=client_env(server),
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"attached line\n")
    process.stdin.flush()
    try:
        assert process.stdout.readline() == b"attached line\n"
    finally:
        process.kill()
        process.communicate(timeout=30)
