"""Token hygiene: long tokens only, guessing is slow, every action leaves one
audit line, and no secret reaches a log.

The throttle is tested with trio's autojump clock over memory streams (a
connection's peer address is set by hand); everything else on loopback.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

import muxstream
from muxstream._cli import _service
from muxstream.protocol import RstStatus
from muxstream.remote import (
    FunctionBackend,
    RemoteServer,
    RemoteServerConfig,
    open_port_forward,
    open_remote_process,
    run_remote,
)

from ._security_helpers import (
    EXEC,
    TOKEN,
    TRANSPORTS,
    cli_service,
    exchange,
    exec_query,
    exec_service,
    plain_endpoint,
    upgrade_head,
)

# --- tokens of at least 16 characters ---------------------------------------------------


@pytest.mark.parametrize("token", ["a", "s3cret", "fifteen-chars-x"])
def test_short_tokens_are_refused_with_a_clear_message(token: str) -> None:
    with pytest.raises(ValueError, match=f"at least 16 characters \\(this one has {len(token)}\\)"):
        RemoteServerConfig(token=token)
    RemoteServerConfig(token=token + "x" * (16 - len(token)))  # 16 is enough


# --- failures: the connection closes, the address slows down ----------------------------


async def test_a_connection_is_closed_after_a_failed_authentication(tmp_path: Path) -> None:
    """Pipelined guesses on one connection: only the first is answered."""
    async with exec_service(tmp_path) as (port, spy):
        guess = upgrade_head(exec_query("true"), authorization=[b"Bearer " + b"g" * 20])
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(guess * 3)
                received = b""
                while chunk := await stream.receive_some(65536):
                    received += chunk
    assert received.count(b"HTTP/1.1 401") == 1
    assert b"connection: close" in received.lower()
    assert spy.started == []


async def test_a_raw_session_is_closed_after_three_bad_tokens(tmp_path: Path) -> None:
    async with cli_service(tmp_path) as (port, _spy):
        transport = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(30):
            async with muxstream.open_session(transport, role=muxstream.CLIENT) as session:
                for _ in range(_service.MAX_AUTH_FAILURES_PER_SESSION):
                    stream = await session.open_stream(
                        headers={"service": "echo", "authorization": "Bearer wrong-token-guess"}
                    )
                    with pytest.raises(trio.BrokenResourceError) as info:
                        await stream.receive_some()
                    assert info.value.__cause__.status == RstStatus.INVALID_CREDENTIALS  # type: ignore[union-attr]
                # The server has given up on this session: no more guesses on it.
                with pytest.raises(trio.BrokenResourceError):
                    extra = await session.open_stream(
                        headers={"service": "echo", "authorization": f"Bearer {TOKEN}"}
                    )
                    await extra.receive_some()


def test_the_throttle_holds_only_an_address_that_keeps_failing() -> None:
    from muxstream._auth import AuthThrottle

    throttle = AuthThrottle(burst=3, rate=1.0, max_delay=5.0)
    assert [throttle.failed("10.0.0.1", 0.0) for _ in range(3)] == [0, 0, 0]
    assert throttle.failed("10.0.0.1", 0.0) == 1.0
    assert throttle.failed("10.0.0.1", 0.0) == 2.0
    assert throttle.failed("10.0.0.2", 0.0) == 0  # another address is not held
    assert throttle.failed("10.0.0.1", 100.0) == 0  # drained after a quiet while
    for _ in range(50):
        delay = throttle.failed("10.0.0.3", 0.0)
    assert delay == 5.0  # bounded


def test_the_throttle_forgets_the_least_recent_address_first() -> None:
    from muxstream._auth import AuthThrottle

    throttle = AuthThrottle(burst=0, rate=1.0, max_addresses=2)
    throttle.failed("a", 0.0)
    throttle.failed("b", 0.0)
    throttle.failed("a", 0.0)
    throttle.failed("c", 0.0)  # forgets b, the least recently failing
    assert throttle.failed("a", 0.0) == 3.0  # remembered
    assert throttle.failed("b", 0.0) == 1.0  # a fresh start (and c is forgotten)
    assert throttle.failed("c", 0.0) == 1.0


async def _answered_after(server: RemoteServer, peer: str, authorization: bytes) -> float:
    """Seconds (trio's clock) until ``server`` answers one GET /version from ``peer``."""
    from muxstream.transport import ConnectionInfo
    from muxstream.transport._connections import set_current_connection

    client, server_side = trio.testing.memory_stream_pair()

    async def serve() -> None:
        set_current_connection(ConnectionInfo(peer))
        await server.handle_connection(server_side)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client.send_all(
            b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
            + authorization + b"\r\n\r\n"
        )
        response = await client.receive_some()
        elapsed = trio.current_time() - start
        await client.aclose()
    assert response.startswith(b"HTTP/1.1 ")
    return elapsed


async def test_a_failing_address_is_slowed_down_and_others_are_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def nothing(*_args: object) -> int:
        return 0

    async with FunctionBackend(nothing) as backend:
        server = RemoteServer(RemoteServerConfig(token=TOKEN, backend=backend), backend)
        wrong, right = b"Bearer " + b"w" * 20, b"Bearer " + TOKEN.encode()
        burst = server.config.limits.auth_failure_burst
        delays = [await _answered_after(server, "192.0.2.7:4000", wrong) for _ in range(burst + 3)]
        assert delays[:burst] == [0.0] * burst
        # Past the burst, one guess a second (the rate the address earns back).
        assert delays[burst:] == pytest.approx([1.0, 1.0, 1.0])
        # The right token from the same address, and another address: at once.
        assert await _answered_after(server, "192.0.2.7:4001", right) == 0.0
        assert await _answered_after(server, "198.51.100.1:4000", wrong) == 0.0


# --- one audit line per exec, attach, cp and port-forward -----------------------------


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "muxstream.audit"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_exec_leaves_one_audit_line(
    transport: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="muxstream.audit")
    async with exec_service(tmp_path) as (port, _spy):
        endpoint = plain_endpoint(port, transport)
        async with open_remote_process(
            endpoint, "demo", ["sh", "-c", "cat; echo err >&2; exit 3"], stdin=True
        ) as process:
            assert process.stdin is not None
            await process.stdin.send_all(b"12345")
            await process.stdin.aclose()
            assert await process.wait() == 3
        result = await run_remote(endpoint, "demo", ["no-such-program"], check=False)
        assert result.returncode == 127
    lines = audit_lines(caplog)
    assert len(lines) == 2, lines
    argv = "argv=['sh', '-c', 'cat; echo err >&2; exit 3']"
    assert lines[0].startswith(f"exec {argv} peer=127.0.0.1:")
    for needle in ("pod=demo", "container=main",
                   "exit=3", "stdin_bytes=5", "stdout_bytes=5", "stderr_bytes=4", "seconds="):
        assert needle in lines[0], (needle, lines[0])
    assert "argv=['no-such-program']" in lines[1] and "exit=not started" in lines[1]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "muxstream.audit")


async def test_attach_and_port_forward_leave_audit_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="muxstream.audit")

    async def echo_upper(stream: trio.SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send_all(bytes(chunk).upper())

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, echo_upper, 0, host="127.0.0.1")
        target = (await nursery.start(serve))[0]
        target_port = target.socket.getsockname()[1]
        async with exec_service(tmp_path) as (port, _spy):
            endpoint = plain_endpoint(port, "spdy")
            async with open_remote_process(endpoint, "demo", attach=True, stdin=True) as process:
                assert process.stdin is not None and process.stdout is not None
                await process.stdin.send_all(b"hi\n")
                assert await process.stdout.receive_some() == b"hi\n"
            async with open_port_forward(endpoint, "demo") as forwarder:
                forwarded = await forwarder.connect(target_port)
                async with forwarded:
                    await forwarded.send_all(b"abc")
                    await forwarded.send_eof()
                    assert await forwarded.receive_some() == b"ABC"
                    assert await forwarded.receive_some() == b""
            with trio.fail_after(10):
                while len(audit_lines(caplog)) < 2:
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    attach, forward = sorted(audit_lines(caplog))
    assert attach.startswith("attach peer=127.0.0.1:") and "stdin_bytes=3" in attach
    assert forward.startswith("port-forward peer=127.0.0.1:")
    for needle in (f"port='{target_port}'", "to_port_bytes=3", "from_port_bytes=3", "result=ok"):
        assert needle in forward, (needle, forward)


# --- no secret in any log -----------------------------------------------------------


async def test_tokens_never_reach_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="muxstream")
    guess = "guessed-token-in-the-query-9f3a"
    async with exec_service(tmp_path) as (port, _spy):
        # Credentials in a query string (some clients put them there) and in the header.
        target = f"{EXEC}?command=true&access_token={guess}&token={guess}"
        head = upgrade_head(target, authorization=[f"Bearer {guess}".encode()])
        assert (await exchange(port, head))[0] == 401
        # The server's own token in an argv (audit line) and in a refused command.
        result = await run_remote(plain_endpoint(port, "spdy"), "demo", ["echo", TOKEN])
        assert result.stdout == TOKEN.encode() + b"\n"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "[REDACTED]" in text and "exec argv=['echo', '[REDACTED]']" in text
    assert guess not in text and TOKEN not in text
    assert "refused POST" in text  # the refusal itself is logged, with the target
