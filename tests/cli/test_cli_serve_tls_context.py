"""The TLS context ``muxstream serve --cert`` builds."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from muxstream._cli._serve import server_ssl_context

from .conftest import write_tls_files


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS 1.3 handshake over memory BIOs, then one byte each way (the client
    so reads whatever the server sent after the handshake); the client's object."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)

    def pump() -> None:
        s_in.write(c_out.read())
        c_in.write(s_out.read())

    done = {client: False, server: False}
    for _ in range(10):
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            pump()
        if all(done.values()):
            break
    assert all(done.values())
    server.write(b"s")
    pump()
    assert client.read(1) == b"s"
    client.write(b"c")
    pump()
    assert server.read(1) == b"c"
    return client


def test_serve_sends_no_session_tickets(tmp_path: Path) -> None:
    # Nobody resumes a session with muxstream serve (each command and kubectl
    # start afresh): tickets would only cost each client ~10 KiB per connection.
    server_pem, ca_pem = write_tls_files(tmp_path)
    pem, ca = str(server_pem), str(ca_pem)
    client_context = ssl.create_default_context(cafile=ca)
    context = server_ssl_context(argparse.Namespace(cert=pem, key=pem))
    assert context is not None
    client = _handshake(context, client_context)
    assert client.version() == "TLSv1.3"
    assert client.session is None or not client.session.has_ticket
    # The same handshake with the stdlib's default server context does carry one
    # (so the check above can tell).
    default = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    default.load_cert_chain(pem, pem)
    client = _handshake(default, client_context)
    assert client.session is not None and client.session.has_ticket
