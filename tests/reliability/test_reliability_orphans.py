"""Nothing a command starts outlives its session, nor the server.

``sh -c 'sleep 60 & echo started'`` exits at once while its ``sleep`` holds the
output pipe: the session must end at once anyway, and the ``sleep`` die. A
client that leaves kills the whole process group. A SIGKILLed server takes its
commands with it (PR_SET_PDEATHSIG; see muxstream/remote/_server_spawn.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
import trio

from muxstream.remote import open_remote_process, run_remote

from ._security_helpers import TRANSPORTS, exec_service, plain_endpoint


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_dead(*pids: int, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while any(alive(pid) for pid in pids):
            await trio.sleep(0.02)


def kill_quietly(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_background_child_does_not_hold_the_session_open(
    transport: str, tmp_path: Path
) -> None:
    async with exec_service(tmp_path) as (port, _spy):
        with trio.fail_after(20):
            result = await run_remote(
                plain_endpoint(port, transport), "demo",
                ["sh", "-c", "sleep 60 & echo $!; echo started"],
            )
    sleeper = int(result.stdout.split()[0])
    try:
        assert result.returncode == 0
        assert result.stdout.split()[1] == b"started"  # every byte written before exit
        await wait_dead(sleeper)
    finally:
        kill_quietly(sleeper)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_that_leaves_kills_the_whole_group(
    transport: str, tmp_path: Path
) -> None:
    async with exec_service(tmp_path) as (port, _spy):
        with trio.fail_after(20):
            async with open_remote_process(
                plain_endpoint(port, transport), "demo",
                ["sh", "-c", "sleep 60 & echo $! $$; sleep 61"],
            ) as process:
                assert process.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some()
            pids = [int(word) for word in line.split()]
        try:
            await wait_dead(*pids)
        finally:
            kill_quietly(*pids)


async def test_output_held_by_a_process_outside_the_group_is_abandoned(
    tmp_path: Path,
) -> None:
    """A process that left the group (setsid) cannot be killed with it; the session
    still ends once the command has exited and the pipe stays silent."""
    script = "setsid sh -c 'echo $$; exec sleep 60' & sleep 0.2; echo done"
    async with exec_service(tmp_path) as (port, _spy):
        with trio.fail_after(20):
            result = await run_remote(plain_endpoint(port, "spdy"), "demo", ["sh", "-c", script])
    escaped = int(result.stdout.split()[0])
    kill_quietly(escaped)
    assert result.returncode == 0 and result.stdout.split()[1] == b"done"


async def test_commands_are_forked_from_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR_SET_PDEATHSIG fires when the *thread* that forked exits: a worker thread
    (trio's open_process forks in one, idle ones exit after 10 s) would kill
    every command 10 s after the server last started one."""
    import subprocess
    import threading

    from muxstream.remote import _server_spawn

    forked_in: list[int] = []
    real = subprocess.Popen

    def spy(*args: object, **kwargs: object) -> object:
        forked_in.append(threading.get_ident())
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(_server_spawn.subprocess, "Popen", spy)
    async with exec_service(tmp_path) as (port, _spy):
        for transport in TRANSPORTS:
            result = await run_remote(plain_endpoint(port, transport), "demo", ["true"])
            assert result.returncode == 0
    assert forked_in == [threading.get_ident()] * 2
