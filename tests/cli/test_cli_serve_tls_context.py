"""The TLS context ``muxstream serve --cert`` builds."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import pytest

from muxstream._cli._serve import server_ssl_context


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


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    cert = ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA)
    pem, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    return str(pem), str(ca_pem)


def test_serve_sends_no_session_tickets(certs: tuple[str, str]) -> None:
    # Nobody resumes a session with muxstream serve (each command and kubectl
    # start afresh): tickets would only cost each client ~10 KiB per connection.
    pem, ca = certs
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
