"""Every way a session ends goes through its one close entry (Session._close),
which records what started it: the close path of docs/close-path.md, and nothing
beside it."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from muxstream import CLIENT, SERVER, Session, open_session
from muxstream._core import Trigger
from muxstream.testing import RawPeer, open_session_pair, start_session

from ._helpers import NO_KEEPALIVE


@pytest.fixture
def triggers(monkeypatch: pytest.MonkeyPatch) -> dict[Session, list[Trigger]]:
    seen: dict[Session, list[Trigger]] = {}
    close = Session._close

    async def recording(self: Session, trigger: Trigger, *args: Any) -> None:
        seen.setdefault(self, []).append(trigger)
        await close(self, trigger, *args)

    monkeypatch.setattr(Session, "_close", recording)
    return seen


async def test_aclose_is_the_users_close_and_the_peer_follows(
    triggers: dict[Session, list[Trigger]],
) -> None:
    with trio.fail_after(10):
        async with open_session_pair(**NO_KEEPALIVE) as (client, server):
            await client.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert server.closed  # its reader saw our GOAWAY and FIN
    assert triggers[client] == [Trigger.USER, Trigger.USER]  # aclose(), then the block's
    assert triggers[server][0] is Trigger.PEER


async def test_idle_timeout_closes_through_the_same_entry(
    triggers: dict[Session, list[Trigger]], autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session_pair(idle_timeout=60, **NO_KEEPALIVE) as (client, server):
        await trio.sleep(61)
        assert client.closed and server.closed
    assert Trigger.IDLE in triggers[client] + triggers[server]


async def test_a_protocol_error_closes_through_the_same_entry(
    triggers: dict[Session, list[Trigger]],
) -> None:
    a, b = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            session = start_session(nursery, a, role=CLIENT, **NO_KEEPALIVE)
            await RawPeer(b).send(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # SPDY/2
            while not session.closed:
                await trio.sleep(0.01)
    assert triggers[session] == [Trigger.ERROR]


async def test_leaving_the_block_by_an_exception_abandons_the_session(
    triggers: dict[Session, list[Trigger]],
) -> None:
    a, _b = trio.testing.memory_stream_pair()
    with trio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        async with open_session(a, role=SERVER, **NO_KEEPALIVE) as session:
            raise KeyError("boom")
    assert info.group_contains(KeyError)
    assert triggers[session] == [Trigger.ABANDONED]
    assert session.closed
