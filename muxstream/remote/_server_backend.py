"""Exec backends: what runs the command behind an exec or attach request.

The server knows protocols; a backend knows processes. :class:`LocalBackend`
(the default) runs argv as a local subprocess, with a pseudo-terminal when the
client asked for a TTY. :class:`FunctionBackend` runs an async Python function
in-process (handy for sandboxes, REPLs and tests). Applications can implement
:class:`ExecBackend` themselves (a container runtime, a VM, ...).

Exit codes follow container runtimes: a process killed by signal N exits 128+N.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import trio

from ._pipe import open_pipe
from ._server_spawn import kill_group, spawn, wait_for_exit


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """One exec or attach request, as the query string described it."""

    command: tuple[str, ...]
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False
    container: str = ""
    pod: str = ""
    namespace: str = "default"
    attach: bool = False


class ProcessHandle(Protocol):
    """A running command, as the server drives it.

    ``stdin`` is None unless the request asked for stdin; closing it means EOF.
    ``stdout``/``stderr`` are None when not requested (with a TTY, stderr is
    merged into stdout and is None). ``wait`` returns the exit code (0-255).
    """

    stdin: trio.abc.SendStream | None
    stdout: trio.abc.ReceiveStream | None
    stderr: trio.abc.ReceiveStream | None

    async def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None:
        """End the command and everything it started. Never blocks; also called
        after :meth:`wait` returned (to end what the command left behind), so it
        must be harmless then."""
        ...


class ExecBackend(Protocol):
    """Starts commands for exec and connects to running ones for attach."""

    async def start(self, request: ExecRequest) -> ProcessHandle:
        """Start ``request.command``. Raises OSError (or any Exception) if it cannot."""
        ...

    async def attach(self, request: ExecRequest) -> ProcessHandle:
        """Connect to the process serving ``request.container``."""
        ...


#: Pipe capacity asked for (F_SETPIPE_SZ): fewer, larger reads and writes than the
#: 64 KiB default; 1 MiB is Linux's default ceiling for unprivileged processes.
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, spelled out for Python < 3.10 stubs


def _widen_pipes(*streams: object) -> None:
    for stream in streams:
        fileno = getattr(stream, "fileno", None)
        if fileno is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fileno(), _F_SETPIPE_SZ, PIPE_SIZE)


def returncode_of(status: int) -> int:
    """Map a Popen return code to a wire exit code (signal N -> 128+N)."""
    return 128 - status if status < 0 else status & 0xFF


class _PtyReceiveStream(trio.abc.ReceiveStream):
    """The pty master's read side: EIO (all slave fds closed) reads as EOF."""

    def __init__(self, fd_stream: trio.lowlevel.FdStream) -> None:
        self._fd_stream = fd_stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._fd_stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
            if isinstance(cause, OSError) and cause.errno == errno.EIO:
                return b""
            raise

    async def aclose(self) -> None:
        await self._fd_stream.aclose()


class _PtyStdin(trio.abc.SendStream):
    """The pty master's write side. Closing it types EOT (^D), as a user would:
    a terminal has no half-close."""

    def __init__(self, fd_stream: trio.lowlevel.FdStream) -> None:
        self._fd_stream = fd_stream
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._fd_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._fd_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._fd_stream.send_all(b"\x04")
        await self._fd_stream.aclose()


#: What a command never inherits from the server's environment: the server's own
#: token (``muxstream serve`` reads it from there; ``exec -- env`` must not print it).
SCRUBBED_ENVIRONMENT = frozenset({"MUXSTREAM_TOKEN"})


def inherited_environment() -> dict[str, str]:
    """The server's environment without :data:`SCRUBBED_ENVIRONMENT`."""
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENVIRONMENT}


class LocalProcess:
    """A local subprocess (see :class:`ProcessHandle`), started by
    :func:`start_local_process`."""

    stdin: trio.abc.SendStream | None
    stdout: trio.abc.ReceiveStream | None
    stderr: trio.abc.ReceiveStream | None

    def __init__(self, popen: subprocess.Popen[bytes], master_fd: int | None) -> None:
        self._popen = popen
        self._master_fd = master_fd
        self.stdin = None
        self.stdout = None
        self.stderr = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    async def resize(self, width: int, height: int) -> None:
        """Set the pty size (TIOCSWINSZ; the kernel signals SIGWINCH). No-op without a TTY."""
        await trio.lowlevel.checkpoint()
        if self._master_fd is not None and width > 0 and height > 0:
            with contextlib.suppress(OSError):
                winsize = struct.pack("HHHH", height, width, 0, 0)
                fcntl.ioctl(self._master_fd, termios.TIOCSWINSZ, winsize)

    async def wait(self) -> int:
        status = await wait_for_exit(self._popen)
        if self._master_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._master_fd)
            self._master_fd = None
        return returncode_of(status)

    def kill(self) -> None:
        """SIGKILL the command's whole process group (it leads its own group),
        whether or not the leader is still running: what a shell started in the
        background must not outlive a client that went away."""
        kill_group(self._popen.pid)
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.kill()


async def start_local_process(
    request: ExecRequest,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> LocalProcess:
    """Start ``request.command`` as a subprocess (no shell: argv as given).

    With ``request.tty`` the child gets a new session whose controlling terminal
    is a fresh pty; stdout carries the terminal output and stderr is None.
    The command leads a new process group (a new session with a TTY), so
    :meth:`LocalProcess.kill` ends its children too, and it is killed if the
    server dies (``_spawn``). Without ``env`` it gets the server's environment
    minus :data:`SCRUBBED_ENVIRONMENT`.
    Raises OSError (e.g. FileNotFoundError) if the program cannot start.
    """
    if not request.command:
        raise ValueError("empty command")
    argv = list(request.command)
    if env is None:
        env = inherited_environment()
    await trio.lowlevel.checkpoint()
    if not request.tty:
        # (our end, the child's end) per requested stream; O_CLOEXEC pipes, so
        # no other command inherits our ends.
        pipes: list[tuple[int, int] | None] = [None, None, None]
        try:
            if request.stdin:
                read_end, write_end = os.pipe()
                pipes[0] = (write_end, read_end)
            for index, wanted in ((1, request.stdout), (2, request.stderr)):
                if wanted:
                    pipes[index] = os.pipe()
            child = [p[1] if p is not None else subprocess.DEVNULL for p in pipes]
            popen = spawn(argv, stdin=child[0], stdout=child[1], stderr=child[2],
                          cwd=cwd, env=env, tty=False)
        except BaseException:
            for pair in pipes:
                if pair is not None:
                    os.close(pair[0])
            raise
        finally:
            for pair in pipes:
                if pair is not None:
                    os.close(pair[1])
        handle = LocalProcess(popen, None)
        ours = [trio.lowlevel.FdStream(p[0]) if p is not None else None for p in pipes]
        handle.stdin, handle.stdout, handle.stderr = ours
        _widen_pipes(*ours)
        return handle
    master, slave = os.openpty()
    try:
        popen = spawn(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                      tty=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    handle = LocalProcess(popen, master)
    handle.stdout = _PtyReceiveStream(trio.lowlevel.FdStream(os.dup(master)))
    handle.stdin = _PtyStdin(trio.lowlevel.FdStream(os.dup(master))) if request.stdin else None
    handle.stderr = None
    return handle


class _AttachTarget:
    """A long-running process that attach clients share: output fans out to every
    attached client from the moment it attaches; any client may write stdin."""

    def __init__(self, process: LocalProcess) -> None:
        self.process = process
        self.subscribers: set[trio.abc.SendStream] = set()
        self.exited = trio.Event()
        self.returncode = 0

    async def pump(self) -> None:
        source = self.process.stdout
        if source is not None:
            async for chunk in source:
                for subscriber in list(self.subscribers):
                    try:
                        await subscriber.send_all(chunk)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.subscribers.discard(subscriber)
        self.returncode = await self.process.wait()
        for subscriber in list(self.subscribers):
            await subscriber.aclose()
        self.subscribers.clear()
        self.exited.set()


class _AttachedStdin(trio.abc.SendStream):
    """stdin of an attached client: closing it detaches, it does not close the
    process's stdin (kubelet's behaviour unless the container is ``stdinOnce``:
    then ``once`` is True and the client's EOF is the process's EOF)."""

    def __init__(self, target: _AttachTarget, *, once: bool = False) -> None:
        self._target = target
        self._once = once

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        stdin = self._target.process.stdin
        if stdin is None:
            await trio.lowlevel.checkpoint()
            return
        await stdin.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        stdin = self._target.process.stdin
        if self._once and stdin is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stdin.aclose()
            return
        await trio.lowlevel.checkpoint()


class _AttachHandle:
    stdin: trio.abc.SendStream | None
    stdout: trio.abc.ReceiveStream | None
    stderr: trio.abc.ReceiveStream | None

    def __init__(
        self, target: _AttachTarget, request: ExecRequest, *, stdin_once: bool = False
    ) -> None:
        self._target = target
        send, receive = open_pipe()
        self._send = send
        target.subscribers.add(send)
        self.stdin = _AttachedStdin(target, once=stdin_once) if request.stdin else None
        self.stdout = receive
        self.stderr = None
        self._detached = trio.Event()

    async def resize(self, width: int, height: int) -> None:
        await self._target.process.resize(width, height)

    async def wait(self) -> int:
        """The shared process's exit code once it exits, or 128+SIGKILL as soon
        as this client detached (its session must not wait for the process)."""
        async with trio.open_nursery() as nursery:
            for event in (self._target.exited, self._detached):
                nursery.start_soon(_set_when, event, nursery.cancel_scope)
        if self._target.exited.is_set():
            return self._target.returncode
        return 128 + signal.SIGKILL

    def kill(self) -> None:
        # Detach only: the shared process outlives one client.
        self._target.subscribers.discard(self._send)
        self._send.close_sync()
        self._detached.set()


async def _set_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class _NurseryOwner:
    """An ``async with`` object that runs background tasks in a nursery of its own.

    ``__aenter__`` opens the nursery; ``__aexit__`` calls :meth:`_stopping`
    (end what runs there, or make it end) and then waits for the nursery.
    """

    _nursery: trio.Nursery | None = None
    _exit_stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._exit_stack = stack
        return self

    def _stopping(self) -> None:
        """Called as the ``async with`` ends, before waiting for the nursery."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._exit_stack is not None and self._nursery is not None
        self._stopping()
        return await self._exit_stack.__aexit__(exc_type, exc, tb)


@dataclass
class LocalBackend(_NurseryOwner):
    """Runs exec commands as local subprocesses; attach connects to long-running
    processes started from ``attach_commands`` (container name -> argv).

    Use ``async with LocalBackend(...)`` when attach targets are configured (the
    shared processes live in the backend's nursery and are killed on exit);
    exec alone works without entering it.

    ``attach_tty`` runs attach targets on a pty (output merged, resize honoured).
    ``attach_stdin_once`` is Kubernetes' ``stdinOnce``: an attached client's EOF
    on stdin closes the process's stdin (a process that ends on EOF, such as
    ``cat``, then ends every attach session; the next attach starts it anew).
    """

    cwd: str | None = None
    env: Mapping[str, str] | None = None
    attach_commands: Mapping[str, Sequence[str]] = field(default_factory=dict)
    attach_tty: bool = False
    attach_stdin_once: bool = False
    _targets: dict[str, _AttachTarget] = field(default_factory=dict, init=False, repr=False)
    _lock: trio.Lock = field(default_factory=trio.Lock, init=False, repr=False)

    def _stopping(self) -> None:
        # The shared attach processes end with the backend; the nursery then
        # waits for their tasks. No new attach target from here on.
        for target in self._targets.values():
            target.process.kill()
        self._nursery = None

    async def start(self, request: ExecRequest) -> ProcessHandle:
        return await start_local_process(request, cwd=self.cwd, env=self.env)

    async def attach(self, request: ExecRequest) -> ProcessHandle:
        async with self._lock:
            target = self._targets.get(request.container)
            if target is None or target.exited.is_set():
                argv = self.attach_commands.get(request.container)
                if argv is None:
                    raise LookupError(f"container {request.container!r} has nothing to attach to")
                if self._nursery is None:
                    raise RuntimeError("attach needs `async with LocalBackend(...)`")
                spec = ExecRequest(
                    tuple(argv),
                    stdin=True,
                    stdout=True,
                    stderr=False,
                    tty=self.attach_tty,
                    container=request.container,
                )
                process = await start_local_process(spec, cwd=self.cwd, env=self.env)
                target = _AttachTarget(process)
                self._targets[request.container] = target
                self._nursery.start_soon(target.pump)
            return _AttachHandle(target, request, stdin_once=self.attach_stdin_once)


ExecFunction = Callable[
    [ExecRequest, trio.abc.ReceiveStream, trio.abc.SendStream, trio.abc.SendStream],
    Awaitable[int],
]


class _FunctionProcess:
    stdin: trio.abc.SendStream | None
    stdout: trio.abc.ReceiveStream | None
    stderr: trio.abc.ReceiveStream | None

    def __init__(self, request: ExecRequest) -> None:
        self.request = request
        stdin_send, self.stdin_receive = open_pipe()
        self.stdout_send, stdout_receive = open_pipe()
        self.stderr_send, stderr_receive = open_pipe()
        self.stdin = stdin_send if request.stdin else None
        self.stdout = stdout_receive
        self.stderr = None if request.tty else stderr_receive
        self.sizes: list[tuple[int, int]] = []
        self.done = trio.Event()
        self.returncode = 0
        self.cancel_scope = trio.CancelScope()
        if not request.stdin:
            stdin_send.close_sync()

    async def resize(self, width: int, height: int) -> None:
        await trio.lowlevel.checkpoint()
        self.sizes.append((width, height))

    async def wait(self) -> int:
        await self.done.wait()
        return self.returncode

    def kill(self) -> None:
        self.cancel_scope.cancel()


class FunctionBackend(_NurseryOwner):
    """Runs exec requests as an async Python function, in-process.

    ``function(request, stdin, stdout, stderr)`` returns the exit code; an
    exception becomes exit code 1 (its text goes to stderr). With a TTY, writes
    to ``stderr`` go to stdout, as on a terminal. Attach runs the same function.
    The backend must be entered (``async with``) so the functions have a nursery.
    """

    def __init__(self, function: ExecFunction) -> None:
        self._function = function

    def _stopping(self) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()  # the functions still running

    async def start(self, request: ExecRequest) -> ProcessHandle:
        if self._nursery is None:
            raise RuntimeError("use `async with FunctionBackend(...)`")
        process = _FunctionProcess(request)
        self._nursery.start_soon(self._run, process)
        await trio.lowlevel.checkpoint()
        return process

    attach = start

    async def _run(self, process: _FunctionProcess) -> None:
        stderr = process.stdout_send if process.request.tty else process.stderr_send
        try:
            with process.cancel_scope:
                process.returncode = await self._function(
                    process.request, process.stdin_receive, process.stdout_send, stderr
                )
            if process.cancel_scope.cancelled_caught:
                process.returncode = 128 + signal.SIGKILL
        except Exception as exc:  # the function's failure is the command's failure
            process.returncode = 1
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stderr.send_all(f"{type(exc).__name__}: {exc}\n".encode())
        finally:
            for stream in (process.stdout_send, process.stderr_send):
                await stream.aclose()
            await process.stdin_receive.aclose()
            process.done.set()
