"""serve_http: plain requests with keep-alive next to Upgrade and WebSocket on one port."""

from __future__ import annotations

import json
import logging

import h11
import pytest
import trio

from muxstream.transport import (
    HTTPRequest,
    open_tls_stream,
    open_upgraded_stream,
    open_websocket_stream,
)


class KeepAliveClient:
    """A tiny h11 client that sends several requests over one connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs = [("host", "test"), ("content-length", str(len(body))), *headers]
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status, response_headers, out = 0, {}, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some()))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(event)
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, response_headers, bytes(out)


async def test_plain_requests_share_one_keepalive_connection(server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        if server.ssl_context is not None:
            stream: trio.abc.Stream = await open_tls_stream(
                server.host, server.port, server.ssl_context, server_hostname="localhost"
            )
        else:
            stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            client = KeepAliveClient(stream)
            status, headers, body = await client.request("GET", "/version")
            assert (status, headers["content-type"]) == (200, "application/json")
            assert json.loads(body) == {"major": "1", "minor": "32"}
            status, _, body = await client.request(
                "POST", "/post?command=sh&command=-c&stdin=true", body=b"x" * 5000
            )
            assert status == 200
            assert json.loads(body) == {
                "length": 5000,
                "query": {"command": ["sh", "-c"], "stdin": ["true"]},
            }
            status, _, body = await client.request("GET", "/elsewhere")
            assert (status, body) == (404, b"not found")
            status, _, body = await client.request(
                "POST", "/post", body=b"y" * 10, headers=(("expect", "100-continue"),)
            )
            assert (status, json.loads(body)["length"]) == (200, 10)


async def test_upgrade_websocket_and_plain_http_on_one_port(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        ws = await open_websocket_stream(
            tcp_server.host, tcp_server.port, "/ws", subprotocols=["SPDY/3.1+portforward.k8s.io"]
        )
        stream, response = await open_upgraded_stream(
            tcp_server.host, tcp_server.port, "/upgrade", protocols=["v4.channel.k8s.io"]
        )
        assert ws.subprotocol == "SPDY/3.1+portforward.k8s.io"
        assert response.protocol == "v4.channel.k8s.io"
        async with ws, stream:
            await ws.send_all(b"over websocket")
            await stream.send_all(b"over upgrade")
            assert await ws.receive_some() == b"over websocket"
            assert await stream.receive_some() == b"over upgrade"
        plain = await trio.open_tcp_stream(tcp_server.host, tcp_server.port)
        async with plain:
            status, _, _ = await KeepAliveClient(plain).request("GET", "/version")
            assert status == 200


async def test_application_error_is_answered_500_and_logged(
    tcp_server,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.ERROR, logger="muxstream.transport")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(tcp_server.host, tcp_server.port)
        async with stream:
            status, _, _ = await KeepAliveClient(stream).request("GET", "/boom")
    assert status == 500
    assert "application bug" in caplog.text


async def test_application_that_does_not_answer_gets_500(tcp_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(tcp_server.host, tcp_server.port)
        async with stream:
            status, _, body = await KeepAliveClient(stream).request("GET", "/silent")
    assert status == 500
    assert b"did not answer" in body


async def test_answering_twice_is_an_error(serve) -> None:  # type: ignore[no-untyped-def]
    errors: list[Exception] = []

    async def app(request: HTTPRequest) -> None:
        await request.respond(204)
        try:
            await request.respond(200, body="again")
        except RuntimeError as exc:
            errors.append(exc)

    port = await serve(app)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            status, _, _ = await KeepAliveClient(stream).request("GET", "/")
    assert status == 204
    assert len(errors) == 1


async def test_accept_upgrade_on_plain_request_is_refused_locally(serve) -> None:  # type: ignore[no-untyped-def]
    errors: list[Exception] = []

    async def app(request: HTTPRequest) -> None:
        try:
            await request.accept_upgrade()
        except ValueError as exc:
            errors.append(exc)
            await request.respond(400, body="no upgrade")

    port = await serve(app)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            status, _, _ = await KeepAliveClient(stream).request("GET", "/")
    assert status == 400
    assert "does not ask for an upgrade" in str(errors[0])
