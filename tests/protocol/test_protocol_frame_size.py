"""The DATA frame size we write depends on the peer: 512 KiB to a peer that
announced flow control (muxstream), 128 KiB to one that did not (spdystream),
unless ``max_send_frame`` is given."""

from __future__ import annotations

import pytest

from muxstream.protocol import (
    DEFAULT_MAX_SEND_FRAME,
    UNCONTROLLED_MAX_SEND_FRAME,
    Connection,
    DataReceived,
    Role,
)

MiB = 1 << 20


def _pair(
    *, peer_announces: bool, max_send_frame: int | None = None
) -> tuple[Connection, Connection, int]:
    client = Connection(Role.CLIENT, max_send_frame=max_send_frame, initial_window=16 * MiB,
                        session_window=64 * MiB)
    server = Connection(Role.SERVER, announce=peer_announces, initial_window=16 * MiB,
                        session_window=64 * MiB)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())  # the server's SETTINGS, if it announces
    sid = client.open_stream({"k": "v"})
    server.receive_data(client.data_to_send())
    server.send_reply(sid)
    client.receive_data(server.data_to_send())
    return client, server, sid


def _frame_sizes(client: Connection, server: Connection, sid: int, size: int) -> list[int]:
    client.send_data(sid, bytes(size))
    sizes: list[int] = []
    for buf in client.buffers_to_send():
        for ev in server.receive_data(bytes(buf)):
            if isinstance(ev, DataReceived):
                sizes.append(len(ev.data))
    return sizes


@pytest.mark.parametrize(("announces", "frame"), [(True, DEFAULT_MAX_SEND_FRAME),
                                                   (False, UNCONTROLLED_MAX_SEND_FRAME)])
def test_frame_size_follows_the_peers_flow_control(announces: bool, frame: int) -> None:
    client, server, sid = _pair(peer_announces=announces)
    assert client.peer_flow_control is announces
    sizes = _frame_sizes(client, server, sid, 3 * MiB + 5)
    assert sum(sizes) == 3 * MiB + 5
    assert max(sizes) == frame
    assert DEFAULT_MAX_SEND_FRAME == 512 * 1024 and UNCONTROLLED_MAX_SEND_FRAME == 128 * 1024


def test_an_explicit_frame_size_is_used_whatever_the_peer() -> None:
    client, server, sid = _pair(peer_announces=True, max_send_frame=4096)
    assert max(_frame_sizes(client, server, sid, 100_000)) == 4096
