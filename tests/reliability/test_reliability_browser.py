"""A web page must not drive the exec service (Origin, DNS rebinding).

Any site can make a browser open ``new WebSocket("ws://127.0.0.1:7000/.../exec?
command=...")``; a DNS rebinding makes the browser send an attacker's name as
``Host``. Browsers always send ``Origin`` on a WebSocket handshake; kubectl and
our clients never do. So: a request with an ``Origin`` is refused unless it is
allowed, in every auth mode; without authentication the ``Host`` must be
loopback. Nothing may start for a refused request (a spying backend counts).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from muxstream import _auth
from muxstream.remote import LocalBackend, RemoteServer, RemoteServerConfig, bound_port

from ._security_helpers import (
    EXEC,
    TOKEN,
    TRANSPORTS,
    SpyBackend,
    exchange,
    exec_query,
    exec_service,
    upgrade_head,
)

EVIL = b"Origin: https://evil.example"
#: What the issue's page sends: touch a file through the exec WebSocket.
ATTACK = exec_query("touch", "pwned")
AUTH_MODES = {
    "token": {"token": TOKEN},
    "no-auth": {"token": None, "insecure_no_auth": True},
}


def credentials(mode: str) -> tuple[bytes, ...]:
    return (b"Bearer " + TOKEN.encode(),) if mode == "token" else ()


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("mode", list(AUTH_MODES))
async def test_a_request_with_a_foreign_origin_is_403_in_every_auth_mode(
    mode: str, kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with exec_service(tmp_path, **AUTH_MODES[mode]) as (port, spy):
        for origin in (EVIL, b"Origin: null", b"Origin: http://127.0.0.1:8000"):
            head = upgrade_head(
                ATTACK, kind=kind, authorization=credentials(mode), extra=[origin]
            )
            status, body = await exchange(port, head)
            assert status == 403, (origin, status, body)
            assert b"Origin" in body
        # Two Origin lines are refused too (never pick one).
        head = upgrade_head(ATTACK, kind=kind, authorization=credentials(mode),
                            extra=[b"Origin: https://ok.example", EVIL])
        assert (await exchange(port, head))[0] == 403
        # Without an Origin (what kubectl sends) the same request is served.
        status, _ = await exchange(port, upgrade_head(exec_query("true"), kind=kind,
                                                      authorization=credentials(mode)))
        assert status == 101
    assert not (tmp_path / "pwned").exists()
    assert not [r for r in spy.started if r.command[0] == "touch"]
    refusals = [r for r in caplog.records if "evil.example" in r.getMessage()]
    assert refusals and all(r.levelname == "WARNING" for r in refusals)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_an_allowed_origin_is_served(kind: str, tmp_path: Path) -> None:
    allowed = {"https://console.example:8443"}
    async with exec_service(tmp_path, allowed_origins=allowed) as (port, _spy):
        for origin in (b"Origin: https://console.example:8443", b"Origin: HTTPS://Console.Example:8443"):
            status, _ = await exchange(port, upgrade_head(exec_query("true"), kind=kind,
                                                          extra=[origin]))
            assert status == 101, origin
        status, _ = await exchange(port, upgrade_head(exec_query("true"), kind=kind,
                                                      extra=[b"Origin: https://console.example"]))
        assert status == 403  # another port is another origin


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_without_auth_a_rebound_host_is_403(kind: str, tmp_path: Path) -> None:
    async with exec_service(tmp_path, token=None, insecure_no_auth=True) as (port, spy):
        for host in (b"attacker-rebound.example", b"attacker-rebound.example:%d" % port,
                     b"localhost.attacker.example", b"127.0.0.1.nip.io", b"0.0.0.0"):
            status, body = await exchange(port, upgrade_head(ATTACK, kind=kind, host=host,
                                                             authorization=()))
            assert status == 403, (host, status, body)
            assert b"not loopback" in body
        for host in (b"127.0.0.1", b"127.0.0.1:%d" % port, b"localhost:%d" % port,
                     b"LOCALHOST", b"[::1]:%d" % port):
            status, _ = await exchange(port, upgrade_head(exec_query("true"), kind=kind,
                                                          host=host, authorization=()))
            assert status == 101, host
    assert not (tmp_path / "pwned").exists()
    assert not [r for r in spy.started if r.command[0] == "touch"]


async def test_with_a_token_the_host_is_not_checked(tmp_path: Path) -> None:
    # Behind a proxy the Host is the public name; the token is what protects.
    async with exec_service(tmp_path) as (port, _spy):
        head = upgrade_head(exec_query("true"), host=b"exec.example.com")
        assert (await exchange(port, head))[0] == 101


@pytest.mark.parametrize(
    ("host", "local"),
    [("localhost", True), ("localhost:7000", True), ("127.0.0.1", True),
     ("127.1.2.3:80", True), ("[::1]", True), ("[::1]:7000", True), ("::1", True),
     ("LocalHost", True), ("example.com", False), ("localhost.", False),
     ("localhost.example", False), ("0.0.0.0", False), ("[::]:7000", False),
     ("10.0.0.1", False), ("", False), ("127.0.0.1:x", False), ("[::1", False)],
)
def test_local_host_headers(host: str, local: bool) -> None:
    assert _auth.is_local_host_header(host) is local


async def test_the_cli_mux_path_refuses_a_foreign_origin_without_auth(tmp_path: Path) -> None:
    """`muxstream serve --insecure-no-auth`: /muxstream (sessions) is checked too."""
    from muxstream._cli import _serve
    from muxstream._cli._common import Address

    async with LocalBackend(cwd=str(tmp_path)) as local:
        spy = SpyBackend(local)
        config = RemoteServerConfig(insecure_no_auth=True, backend=spy)
        server = _serve.Server(None, RemoteServer(config, spy), None, close_timeout=5)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                _serve.listen, server.handle_tcp, Address("127.0.0.1", 0), config.limits, nursery
            )
            port = bound_port(listeners)
            for target in ("/muxstream", ATTACK):
                for extra, host in (([EVIL], b"127.0.0.1"), ([], b"attacker-rebound.example")):
                    head = upgrade_head(target, authorization=(), extra=extra, host=host)
                    status, _ = await exchange(port, head)
                    assert status == 403, (target, extra, host)
            status, _ = await exchange(port, upgrade_head("/muxstream", authorization=()))
            assert status == 101
            nursery.cancel_scope.cancel()
    assert spy.started == []
    assert not (tmp_path / "pwned").exists()


async def test_serve_remote_says_once_that_no_auth_lets_every_local_user_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with exec_service(tmp_path, token=None, insecure_no_auth=True):
        pass
    lines = [r.getMessage() for r in caplog.records if "every local user" in r.getMessage()]
    assert len(lines) == 1 and "run commands as" in lines[0]
    assert EXEC  # the exec path is the one served
