"""RemoteServerConfig.session_options: what each exec/port-forward session gets."""

from __future__ import annotations

import functools

import pytest
import trio

from muxstream import SessionKeywords, SessionOptions
from muxstream.remote import RemoteServerConfig, open_port_forward, run_remote

from ._remote_helpers import TOKEN, remote_server

#: Every session option a user might set, close_timeout among them (it is
#: also a field of RemoteServerConfig of its own).
USER_OPTIONS: SessionKeywords = {"close_timeout": 3.0, "session_window": 4 << 20}


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)


async def test_exec_over_spdy_takes_close_timeout_from_session_options() -> None:
    # It used to be passed twice (close_timeout= and **session_options):
    # every exec failed with "got multiple values for keyword argument".
    async with remote_server("spdy", session_options=USER_OPTIONS) as endpoint:
        with trio.fail_after(30):
            done = await run_remote(endpoint, "demo", ["sh", "-c", "echo ok"])
    assert (done.returncode, done.stdout) == (0, b"ok\n")


async def test_port_forward_over_spdy_takes_close_timeout_from_session_options() -> None:
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        port = echo[0].socket.getsockname()[1]
        async with remote_server("spdy", session_options=USER_OPTIONS) as endpoint:
            with trio.fail_after(30):
                async with open_port_forward(endpoint, "demo") as forwarder:
                    stream = await forwarder.connect(port)
                    async with stream:
                        await stream.send_all(b"ping")
                        assert await stream.receive_some() == b"ping"
        nursery.cancel_scope.cancel()


def test_session_options_override_the_service_defaults_and_close_timeout() -> None:
    config = RemoteServerConfig(token=TOKEN, close_timeout=7.0)
    options = SessionOptions.resolve(None, config.session_kwargs())
    assert options.close_timeout == 7.0
    assert options.session_window == 8 << 20  # the service's own budget
    mine = RemoteServerConfig(token=TOKEN, close_timeout=7.0, session_options=USER_OPTIONS)
    options = SessionOptions.resolve(None, mine.session_kwargs())
    assert (options.close_timeout, options.session_window) == (3.0, 4 << 20)


def test_a_misspelt_session_option_is_refused_when_configured() -> None:
    # Not at the first request, where it failed every session.
    with pytest.raises(TypeError, match="close_timout"):
        RemoteServerConfig(token=TOKEN, session_options={"close_timout": 1.0})  # type: ignore[typeddict-unknown-key]
