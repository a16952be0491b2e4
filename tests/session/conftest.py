"""Fixtures for the session tests: links to run sessions over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from muxstream.testing import open_tcp_transport_pair

TransportPair = tuple[trio.abc.Stream, trio.abc.Stream]


async def _memory() -> TransportPair:
    return trio.testing.memory_stream_pair()


@pytest.fixture(params=["memory", "tcp"])
def make_link(request: pytest.FixtureRequest) -> Callable[[], Awaitable[TransportPair]]:
    """An async factory of connected transport pairs: memory streams or real TCP."""
    return _memory if request.param == "memory" else open_tcp_transport_pair
