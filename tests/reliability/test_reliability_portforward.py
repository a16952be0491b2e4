"""Port-forward reaches only what the server allows, and ports are read strictly.

``int()`` reads ``+7199``, `` 7199``, ``7_199`` and Arabic-Indic digits as 7199,
and ``"²".isdigit()`` is true (then ``int`` raises: a 500). Ports are ASCII
digits, 1-65535, as kubelet's ``strconv.ParseUint`` reads them, in the query
(``ports=``) and in each forwarded connection's ``port`` header.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from muxstream._cli import USAGE_ERROR, _serve, build_parser
from muxstream.remote import PortRanges, RemoteError, open_port_forward
from muxstream.remote._channels import (
    PORT_HEADER,
    REQUEST_ID_HEADER,
    STREAM_TYPE_HEADER,
    StreamType,
)

from ._security_helpers import (
    PORTFORWARD,
    TRANSPORTS,
    exchange,
    exec_service,
    plain_endpoint,
    upgrade_head,
)


@asynccontextmanager
async def counting_listener() -> AsyncIterator[tuple[int, list[trio.SocketStream]]]:
    """A loopback listener that records every connection it accepts."""
    accepted: list[trio.SocketStream] = []

    async def handler(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        async with stream:
            async for chunk in stream:
                await stream.send_all(chunk)

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        yield listeners[0].socket.getsockname()[1], accepted
        nursery.cancel_scope.cancel()


def tricky_spellings(port: int) -> list[str]:
    arabic_indic = "".join(chr(0x660 + int(d)) for d in str(port))
    return [f"+{port}", f" {port}", f"{port} ", f"{str(port)[:2]}_{str(port)[2:]}",
            arabic_indic, f"{port}.0", f"0x{port:x}"]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_malformed_ports_in_the_query_are_400_not_500(kind: str, tmp_path: Path) -> None:
    async with counting_listener() as (port, accepted), exec_service(tmp_path) as (server, _):
        for value in ["\u00b2", "0", "65536", "-1", "", ",", f"{port},x", *tricky_spellings(port)]:
            target = f"{PORTFORWARD}?ports={quote(value)}"
            status, body = await exchange(server, upgrade_head(target, kind=kind))
            assert status == 400, (value, status, body)
            assert b"invalid port" in body
        status, _ = await exchange(server, upgrade_head(f"{PORTFORWARD}?ports={port}"))
        assert status == 101  # (SPDY: the WebSocket head above offers exec's subprotocol)
    assert accepted == []


async def forward_with_header(endpoint_port: int, port_header: str) -> str:
    """Open one forwarded connection with a hand-written ``port`` header; return
    what the server's error stream says."""
    async with open_port_forward(plain_endpoint(endpoint_port, "spdy"), "demo") as forwarder:
        headers = {PORT_HEADER: port_header, REQUEST_ID_HEADER: "7"}
        error = await forwarder.session.open_stream(
            headers={STREAM_TYPE_HEADER: str(StreamType.ERROR), **headers}
        )
        await error.send_eof()
        data = await forwarder.session.open_stream(
            headers={STREAM_TYPE_HEADER: str(StreamType.DATA), **headers}
        )
        await data.send_eof()  # nothing to send: a connection that works ends at once
        with trio.fail_after(30):
            message = (await error.receive_all()).decode()
        await data.aclose()
        return message


async def test_a_port_header_in_another_spelling_reaches_nothing(tmp_path: Path) -> None:
    async with counting_listener() as (port, accepted), exec_service(tmp_path) as (server, _):
        for spelling in tricky_spellings(port):
            message = await forward_with_header(server, spelling)
            assert "invalid port" in message, (spelling, message)
    assert accepted == []


async def test_allowed_ports_and_disabled_port_forward(tmp_path: Path) -> None:
    async with counting_listener() as (port, accepted):
        allowed = PortRanges([(port, port)])
        async with exec_service(tmp_path, allowed_ports=allowed) as (server, _):
            assert "not allowed" in await forward_with_header(server, str(port + 1))
            assert await forward_with_header(server, str(port)) == ""
        assert len(accepted) == 1
        async with exec_service(tmp_path, port_forward=False) as (server, _):
            for kind in TRANSPORTS:
                status, body = await exchange(server, upgrade_head(PORTFORWARD, kind=kind))
                assert status == 403 and b"port-forward is disabled" in body
            with pytest.raises(RemoteError, match="disabled"):
                await forward_with_header(server, str(port))
    assert len(accepted) == 1


def serve_args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["serve", *argv])
    assert isinstance(args, argparse.Namespace)
    return args


def test_allow_port_takes_ports_and_ranges() -> None:
    args = serve_args("--allow-port", "8000-8002", "--allow-port", "9000")
    ports = PortRanges(args.allow_port)
    assert [p for p in (7999, 8000, 8001, 8002, 8003, 8999, 9000, 9001) if p in ports] == [
        8000, 8001, 8002, 9000]
    assert _serve.port_forward_enabled(args)


@pytest.mark.parametrize("bad", ["\u00b2", "+80", "80-", "-80", "90-80", "0", "65536", "1_000",
                                 "\u0668\u0660", "80-90-100", ""])
def test_allow_port_refuses_what_is_not_a_port(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        serve_args("--allow-port", bad)
    assert info.value.code == USAGE_ERROR
    err = capsys.readouterr().err
    assert "--allow-port" in err and "is not a port (1-65535) or a range LOW-HIGH" in err


@pytest.mark.parametrize(
    ("argv", "enabled"),
    [([], True), (["--no-port-forward"], False), (["--allow", "tar"], False),
     (["--allow", "tar", "--allow-port", "8000"], True),
     (["--allow-port", "8000", "--no-port-forward"], False)],
)
def test_when_serve_offers_port_forward(argv: list[str], enabled: bool) -> None:
    assert _serve.port_forward_enabled(serve_args(*argv)) is enabled
