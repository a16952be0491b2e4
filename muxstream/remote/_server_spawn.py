"""Starting a command so that nothing it starts outlives its session or the server.

Three mechanisms, each covering what the others cannot:

* The command leads its own process group (a new session when it has a
  terminal), and the server kills the whole group when the session ends,
  **whatever the leader did**: ``sh -c 'sleep 300 & echo started'`` exits at
  once, but its ``sleep`` is still in the group and still holds the output
  pipe. (A process group's id cannot be reused as a new process id while any
  member lives, so signalling it after the leader was reaped reaches only what
  the command left behind.)
* ``PR_SET_PDEATHSIG`` (Linux ``prctl``) makes the kernel SIGKILL the command
  if the server dies, even by SIGKILL, when nothing could run a cleanup. The
  "parent" it watches is the *thread* that forked: trio's ``open_process``
  forks in a worker thread that exits after 10 idle seconds, which would kill
  every command then. So we fork from the trio thread itself (``subprocess.
  Popen`` directly; the event loop waits for the exec, about a millisecond).
  The child checks, after arming it, that its parent is still the server (it
  may have died in between).
* Rejected: becoming a subreaper (``PR_SET_CHILD_SUBREAPER``). Orphans would be
  re-parented to the server, which must then reap them (a ``waitpid(-1)`` loop
  that would also steal the exit statuses trio waits for), and it kills nothing
  when the server itself is SIGKILLed.

What none of this covers: grandchildren that left the group (``setsid``,
``setpgid``) and outlive a SIGKILLed server. Under systemd, run the service
with ``KillMode=control-group`` (the default), which kills the unit's whole
cgroup; docs/security.md says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import signal
import subprocess
import sys
import termios
from collections.abc import Mapping, Sequence
from typing import Any

import trio

#: prctl(2) option: the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has it
        return None


# Resolved once, here: the child may only call it, not look it up (no imports,
# no allocation-heavy work between fork and exec).
_prctl = _load_prctl()


def _child_setup(parent_pid: int, tty: bool, nofile: tuple[int, int] | None) -> None:
    """Runs in the child, between fork and exec."""
    if tty:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if nofile is not None:
        # The server raised its soft descriptor limit; commands get the usual
        # one back (select()-based programs break above 1024).
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)  # the server died before we armed it


#: The descriptor limit children get back (see _child_setup); None: leave it.
_children_nofile: tuple[int, int] | None = None


def set_children_nofile(limit: tuple[int, int] | None) -> None:
    """Have commands started from now on run with this RLIMIT_NOFILE (soft, hard)."""
    global _children_nofile
    _children_nofile = limit


def spawn(
    argv: Sequence[str],
    *,
    stdin: int,
    stdout: int,
    stderr: int,
    cwd: str | None,
    env: Mapping[str, str] | None,
    tty: bool,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (no shell) as the leader of a new process group (a new
    session with ``tty``), armed to die with the server. Call it from the trio
    thread (see the module docstring). Blocks until the program is executed.
    Raises OSError if it cannot start."""
    parent = os.getpid()
    nofile = _children_nofile

    def setup() -> None:
        _child_setup(parent, tty, nofile)

    return subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        process_group=None if tty else 0,
        preexec_fn=setup,
    )


async def wait_for_exit(popen: subprocess.Popen[bytes]) -> int:
    """Wait (without blocking trio) until ``popen`` exits; reap it; return its
    ``returncode`` (negative: killed by that signal). Cancellable."""
    if popen.returncode is not None:
        await trio.lowlevel.checkpoint()
        return popen.returncode
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError as exc:
        if exc.errno != errno.ESRCH:  # pragma: no cover - kernels before 5.3
            return await trio.to_thread.run_sync(popen.wait, abandon_on_cancel=True)
        pidfd = -1  # already exited (and not reaped by us: reap below)
    if pidfd >= 0:
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
    else:
        await trio.lowlevel.checkpoint()
    return popen.wait()


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``; nothing if it is empty or not ours."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
