"""`muxstream cp` run as a user runs it, against a loopback `muxstream serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import (
    TIMEOUT,
    TOKEN,
    CuttingProxy,
    Served,
    client_env,
    muxstream,
    muxstream_many,
    start_server,
    stop_server,
)
from .test_cli_errors import assert_one_line_error


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".muxstream-" in p.name)


def test_cp_into_existing_directories_both_ways(server: Served, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(70_000))
    remote, local = tmp_path / "remote", tmp_path / "local"
    remote.mkdir()
    local.mkdir()
    (remote / "other.txt").write_text("not empty")
    env = client_env(server)
    up, up_slash = muxstream_many(
        [["cp", str(source), f":{remote}", "--json"],
         ["cp", str(source), f"demo:{local}/", "--json"]],
        env=env,
    )
    assert up.returncode == 0 and up_slash.returncode == 0, up.stderr + up_slash.stderr
    assert json.loads(up.stdout)["destination"] == f"{remote}/data.bin"
    assert (remote / "data.bin").read_bytes() == source.read_bytes()
    assert (local / "data.bin").read_bytes() == source.read_bytes()
    (local / "data.bin").unlink()
    down = muxstream("cp", f":{remote}/data.bin", f"{local}/", env=env)
    assert down.returncode == 0, down.stderr
    assert (local / "data.bin").read_bytes() == source.read_bytes()
    assert leftovers(remote) == leftovers(local) == []


def test_cp_takes_kubectls_container_and_namespace_forms(server: Served, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"kubectl habits\n")
    runs = [
        ["cp", "-c", "main", str(source), f"demo:{tmp_path}/one.bin"],
        ["cp", str(source), f"default/demo:{tmp_path}/two.bin", "-c", "main"],
        ["cp", "--container", "main", f"default/demo:{source}", str(tmp_path / "three.bin")],
    ]
    for result in muxstream_many(runs, env=client_env(server)):
        assert result.returncode == 0, result.stderr
    for name in ("one.bin", "two.bin", "three.bin"):
        assert (tmp_path / name).read_bytes() == b"kubectl habits\n"


def test_cp_of_a_missing_remote_file_names_the_fact(server: Served, tmp_path: Path) -> None:
    result = muxstream("cp", f":{tmp_path}/nothing", str(tmp_path / "x"), env=client_env(server))
    line = assert_one_line_error(result, "cp", f"no such file on the server: {tmp_path}/nothing")
    assert "digest" not in line and "find" not in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_resume_continues_a_cut_cp(server: Served, tmp_path: Path, direction: str) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 << 20))
    dest = tmp_path / "dest"
    dest.mkdir()
    upload = direction == "upload"
    argv = (
        ["cp", "--resume", str(source), f":{dest}/copy.bin"]
        if upload
        else ["cp", "--resume", f":{source}", str(dest / "copy.bin")]
    )
    proxy = CuttingProxy(server.port, limit=8 << 20, downstream=not upload)
    try:
        cut = muxstream(*argv, "-a", f"127.0.0.1:{proxy.port}", env=client_env(server))
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert_one_line_error(cut, "cp", "connection lost", "partial copy stays", "--resume")
    [partial] = leftovers(dest)
    kept = (dest / partial).stat().st_size
    assert not (dest / "copy.bin").exists()
    resumed = muxstream(*argv, "--json", env=client_env(server))
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed_from"] == kept and report["bytes"] == (24 << 20) - kept
    assert report["digest_verified"] is True
    assert (dest / "copy.bin").read_bytes() == source.read_bytes()
    assert leftovers(dest) == []
    if not upload:
        assert kept > 0  # the client keeps every byte it received


def test_ctrl_c_mid_upload_leaves_no_file_and_says_so(server: Served, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(32 << 20))
    (tmp_path / "dest").mkdir()
    proxy = CuttingProxy(server.port, limit=4 << 20, stall=True)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "muxstream", "cp", str(source), f":{tmp_path}/dest/copy.bin",
             "-a", f"127.0.0.1:{proxy.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=client_env(server),
        )
        try:
            assert proxy.cut.wait(TIMEOUT)  # the link hangs mid-copy
            [temporary] = leftovers(tmp_path / "dest")
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()
    finally:
        proxy.close()
    assert process.returncode == 130
    assert f"removed the temporary file {tmp_path}/dest/{temporary}" in err.decode()
    assert list((tmp_path / "dest").iterdir()) == []


def test_allow_cp_serves_copies_and_nothing_else(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(50_000))
    marker = tmp_path / "ran"
    served = start_server("--token", TOKEN, "--allow-cp")
    try:
        env = client_env(served)
        up, down, runner, other = muxstream_many(
            [["cp", str(source), f":{tmp_path}/up.bin"],
             ["cp", f":{source}", str(tmp_path / "down.bin")],
             ["exec", "--", "tar", "cf", "/dev/null", "--checkpoint=1",
              f"--checkpoint-action=exec=touch {marker}", str(source)],
             ["exec", "--", "touch", str(marker)]],
            env=env,
        )
    finally:
        stop_server(served)
    assert up.returncode == 0 and down.returncode == 0, up.stderr + down.stderr
    assert (tmp_path / "up.bin").read_bytes() == (tmp_path / "down.bin").read_bytes()
    assert_one_line_error(runner, "exec", "allowed only with the arguments a copy sends")
    assert_one_line_error(other, "exec", "not allowed")
    assert not marker.exists()


def test_allow_tar_is_refused_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "muxstream", "serve", "-a", "127.0.0.1:0", "--token", TOKEN,
         "--allow", "tar"],
        capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(result, "serve", "tar cannot be on an allow-list", "--allow-cp")
