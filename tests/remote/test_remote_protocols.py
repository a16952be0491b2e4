"""Older protocol versions, negotiation failures, stream-creation timeouts, attach."""

from __future__ import annotations

import functools

import pytest
import trio

import muxstream
from muxstream.remote import (
    KubeApi,
    LocalBackend,
    RemoteEndpoint,
    RemoteError,
    RemoteServer,
    RemoteServerConfig,
    RemoteStatusError,
    bound_port,
    open_remote_process,
    run_remote,
)
from muxstream.remote import _client_exec as client_module
from muxstream.remote._client_exec import exec_target
from muxstream.transport import (
    HTTPRequest,
    serve_http,
    wrap_upgrade_client,
    wrap_websocket_client,
)

from ._remote_helpers import TOKEN, remote_server


async def test_websocket_v4_still_reports_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "WEBSOCKET_PROTOCOLS", ("v4.channel.k8s.io",))
    async with remote_server("websocket") as endpoint:
        async with open_remote_process(endpoint, "demo", ["sh", "-c", "echo v4; exit 9"]) as p:
            assert p.protocol == "v4.channel.k8s.io"
            assert p.stdout is not None
            assert await p.stdout.receive_some() == b"v4\n"
            assert await p.wait() == 9


@pytest.mark.parametrize("version", ["v3.channel.k8s.io", "v2.channel.k8s.io"])
async def test_spdy_v2_v3_carry_plain_text_errors(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "SUPPORTED_STREAM_PROTOCOLS", (version,))
    async with remote_server("spdy") as endpoint:
        ok = await run_remote(endpoint, "demo", ["true"])
        assert ok.returncode == 0
        async with open_remote_process(endpoint, "demo", ["sh", "-c", "exit 3"]) as p:
            assert p.protocol == version
            with pytest.raises(RemoteStatusError, match="exit status 3"):
                await p.wait()


async def test_spdy_without_a_common_version_is_403(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "SUPPORTED_STREAM_PROTOCOLS", ("channel.k8s.io",))
    async with remote_server("spdy") as endpoint:
        with pytest.raises(RemoteError) as info:
            await run_remote(endpoint, "demo", ["true"])
    assert info.value.status == 403
    assert "unable to negotiate protocol" in info.value.message


async def test_missing_streams_time_out_with_a_reason() -> None:
    async with remote_server("spdy", stream_creation_timeout=0.5) as endpoint:
        stream, host = await endpoint.connect()
        target = exec_target(
            endpoint,
            "demo",
            ["true"],
            container=None,
            stdin=True,
            stdout=True,
            stderr=False,
            tty=False,
        )
        upgraded, _response = await wrap_upgrade_client(
            stream,
            target,
            host=host,
            method="POST",
            protocols=["v4.channel.k8s.io"],
            headers=[("authorization", f"Bearer {TOKEN}")],
        )
        async with muxstream.open_session(upgraded, role=muxstream.CLIENT) as session:
            error = await session.open_stream(headers={"streamtype": "error"})
            await error.send_eof()
            with trio.fail_after(30):
                reason = b""
                async for chunk in error:
                    reason += chunk
    assert b"timed out waiting for streams" in reason
    assert b"stdin" in reason and b"stdout" in reason


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_attach_joins_a_running_process(transport: str) -> None:
    script = 'while read l; do [ "$l" = quit ] && exit 0; echo "got $l"; done'
    async with LocalBackend(attach_commands={"main": ["sh", "-c", script]}) as backend:
        async with remote_server(transport, backend=backend) as endpoint:
            async with open_remote_process(
                endpoint, "demo", attach=True, stdin=True, stderr=False
            ) as process:
                assert process.stdin is not None and process.stdout is not None
                await process.stdin.send_all(b"hello\n")
                seen = b""
                with trio.fail_after(30):
                    while b"got hello" not in seen:
                        seen += await process.stdout.receive_some()
                    await process.stdin.send_all(b"quit\n")
                    assert await process.wait() == 0


async def test_auto_falls_back_to_spdy_when_websocket_is_refused() -> None:
    """Like kubectl: a refused WebSocket upgrade (any non-101) means "try SPDY"."""
    config = RemoteServerConfig(token=TOKEN, api=KubeApi({"demo": ["main"]}))
    async with LocalBackend() as backend:
        server = RemoteServer(config, backend)
        refused: list[str] = []

        async def no_websockets(request: HTTPRequest) -> None:
            if request.is_websocket:
                refused.append(request.target)
                await request.respond(400, (), "no websockets here")
                return
            await server.app(request)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(serve_http, no_websockets, 0))
            endpoint = RemoteEndpoint(f"http://127.0.0.1:{bound_port(listeners)}", token=TOKEN)
            async with open_remote_process(endpoint, "demo", ["echo", "fell back"]) as process:
                assert process.transport == "spdy"
                assert process.stdout is not None
                assert await process.stdout.receive_some() == b"fell back\n"
                assert await process.wait() == 0
            nursery.cancel_scope.cancel()
    assert len(refused) == 1


async def test_hostile_websocket_messages_do_not_disturb_the_command() -> None:
    """Unknown channels, malformed close signals, garbage resizes and empty
    messages are ignored; the command still gets its stdin and reports its exit."""
    async with remote_server("websocket") as endpoint:
        stream, host = await endpoint.connect()
        target = exec_target(
            endpoint,
            "demo",
            ["cat"],
            container=None,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=True,
        )
        websocket = await wrap_websocket_client(
            stream,
            target,
            host=host,
            subprotocols=["v5.channel.k8s.io"],
            headers=[("authorization", f"Bearer {TOKEN}")],
        )
        async with websocket:
            for junk in (
                b"",
                b"\xff",
                b"\xff\x00\x01",
                b"\x09nobody listens",
                b"\x04{{{{not json",
                b"\x04" + b"[" * 10_000,
                b"\x00hello\n",
                b"\xff\x00",
            ):
                await websocket.send_message(junk)
            output = b""
            with trio.fail_after(30):
                while True:
                    try:
                        message = await websocket.receive_message()
                    except trio.EndOfChannel:
                        break
                    output += message
    assert b"\x01hello" in output  # the tty echoes, then cat repeats it
    assert b'\x03{"metadata": {}, "status": "Success"}' in output


async def test_port_forward_half_pair_is_reset_after_the_timeout() -> None:
    async with remote_server("spdy", stream_creation_timeout=0.5) as endpoint:
        stream, host = await endpoint.connect()
        upgraded, _response = await wrap_upgrade_client(
            stream,
            endpoint.path("demo", "portforward"),
            host=host,
            method="POST",
            protocols=["portforward.k8s.io"],
            headers=[("authorization", f"Bearer {TOKEN}")],
        )
        async with muxstream.open_session(upgraded, role=muxstream.CLIENT) as session:
            data = await session.open_stream(
                headers={"streamtype": "data", "port": "1", "requestid": "0"}
            )
            with trio.fail_after(30), pytest.raises(trio.BrokenResourceError):
                await data.receive_some()
