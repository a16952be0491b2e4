"""Session options are typed: a misspelt one fails the type check and the call."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import trio
import trio.testing

from muxstream import CLIENT, SessionKeywords, SessionOptions, open_session
from muxstream.testing import open_session_pair

ROOT = Path(__file__).resolve().parents[2]


def test_the_keywords_are_the_options_fields_with_their_types() -> None:
    fields = typing.get_type_hints(SessionOptions)
    assert typing.get_type_hints(SessionKeywords) == fields
    assert SessionKeywords.__optional_keys__ == frozenset(fields)


async def test_a_misspelt_option_is_a_type_error_at_once() -> None:
    a, _b = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match="close_timout"):
        async with open_session(a, role=CLIENT, close_timout=1):  # type: ignore[call-arg]
            pass  # pragma: no cover


async def test_options_and_keywords_combine() -> None:
    base = SessionOptions(close_timeout=3, ping_timeout=4)
    async with open_session_pair(options=base, ping_timeout=5, keepalive_interval=None) as (
        client, server,
    ):
        for session in (client, server):
            assert session.options == dataclasses.replace(
                base, ping_timeout=5, keepalive_interval=None)


def test_a_misspelt_option_fails_mypy(tmp_path: Path) -> None:
    program = tmp_path / "misspelt.py"
    program.write_text(
        "import trio\n"
        "import muxstream\n\n\n"
        "async def main(transport: trio.abc.Stream) -> None:\n"
        "    async with muxstream.open_session(transport, role=muxstream.CLIENT,\n"
        "                                      close_timeout=1.0, keepalive_intervall=None):\n"
        "        pass\n"
        "    async with muxstream.open_tcp_session('127.0.0.1', 1, ping_timout=2):\n"
        "        pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(program)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, result.stdout + result.stderr
    assert '"keepalive_intervall"' in errors[0] and '"ping_timout"' in errors[1]

