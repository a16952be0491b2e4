"""The CLI's pure helpers: parsing, progress display, error descriptions."""

from __future__ import annotations

import argparse
import io

import pytest
import trio

from muxstream import ConnectionLost, SessionClosed, StreamResetError
from muxstream._cli._common import (
    Address,
    BadToken,
    CliError,
    Progress,
    parse_address,
    parse_size,
    percentile,
)
from muxstream._cli._copy import RemoteSpec, split_remote
from muxstream._cli._explain import describe, root_error
from muxstream._cli._remote import parse_port_mapping
from muxstream.protocol import RstStatus


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", Address("127.0.0.1", 7000)),
        ("example.org", Address("example.org", 7000)),
        (":8000", Address("127.0.0.1", 8000)),
        ("8001", Address("127.0.0.1", 8001)),
        ("[::1]:9000", Address("::1", 9000)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:http", "host:70000", "[::1]:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_address(text)


def test_parse_size() -> None:
    assert parse_size("256M") == 256 << 20
    assert parse_size("1G") == 1 << 30
    assert parse_size("64KiB") == 64 << 10
    assert parse_size("1000") == 1000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


def test_port_mappings_and_remote_paths() -> None:
    assert parse_port_mapping("8080:80") == (8080, 80)
    assert parse_port_mapping("80") == (80, 80)
    assert parse_port_mapping(":80") == (0, 80)
    assert split_remote("demo:/tmp/x", "demo") == RemoteSpec("demo", "/tmp/x")
    assert split_remote(":/tmp/x", "pod1") == RemoteSpec("pod1", "/tmp/x")
    assert split_remote("./a:b", "demo") is None
    assert split_remote("/abs/path", "demo") is None


def test_cp_takes_kubectls_namespace_pod_path_form() -> None:
    assert split_remote("ns1/web:/tmp/x", "demo") == RemoteSpec("web", "/tmp/x", "ns1")
    assert split_remote("web:rel/x", "demo") == RemoteSpec("web", "rel/x")
    for bad in ("a/b/c:/x", "ns/:/x"):
        with pytest.raises(CliError, match="NAMESPACE/"):
            split_remote(bad, "demo")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_mode_prints_each_tenth_once() -> None:
    out = io.StringIO()
    progress = Progress("copy", 1000, mode="lines", stream=out)
    for done in range(0, 1001, 50):
        progress.update(done)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{p}%" for p in range(10, 101, 10)]


def test_progress_quiet_mode_prints_nothing() -> None:
    out = io.StringIO()
    progress = Progress("copy", 1000, mode="quiet", stream=out)
    progress.update(1000)
    progress.finish()
    assert out.getvalue() == ""


def test_progress_on_a_terminal_draws_bar_rate_and_eta() -> None:
    out = FakeTerminal()
    progress = Progress("cp", 4 << 20, mode="quiet", stream=out)
    progress.update(1 << 20)
    progress.update(4 << 20)
    progress.finish()
    text = out.getvalue()
    assert text.startswith("\rcp [")
    assert "100.0%" in text and "MiB/s" in text and "ETA 0:00:00" in text
    assert text.endswith("\n")


def test_describe_maps_expected_failures_to_one_line() -> None:
    reset = trio.BrokenResourceError("x")
    reset.__cause__ = StreamResetError(RstStatus.CANCEL)
    lost = trio.BrokenResourceError("x")
    lost.__cause__ = ConnectionLost("transport failed while reading: reset")
    closed = trio.BrokenResourceError("x")
    closed.__cause__ = SessionClosed("peer closed the connection (EOF)")
    assert describe(BadToken("bad token: nope")) == "bad token: nope"
    assert describe(ConnectionRefusedError(111, "refused")) == (
        "cannot connect to the server: connection refused (is `muxstream serve` running there?)"
    )
    assert describe(trio.TooSlowError()) == "timed out"
    assert describe(lost) == "connection lost: transport failed while reading: reset"
    assert describe(closed) == "the server closed the session"
    assert describe(reset) is not None and "CANCEL" in describe(reset)
    assert describe(KeyError("bug")) is None  # a bug is not an expected failure


def test_root_error_unwraps_exception_groups() -> None:
    inner = ConnectionRefusedError(111, "refused")
    group = BaseExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert root_error(group) is inner


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_show_total_percent_rate_and_eta() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress("bulk", 100 << 20, mode="lines", stream=out, clock=clock)
    clock.now += 7.0  # setting up (random blocks, the stream) is not the transfer
    progress.update(0)
    clock.now += 0.5
    progress.update(50 << 20)
    lines = out.getvalue().splitlines()
    # 50 MiB in the 0.5 s since update(0): 100 MiB/s, the rate a summary computes.
    assert lines[-1] == "bulk:  50%  50.0 MiB of 100.0 MiB  100 MiB/s  ETA 0:00:01"


def test_progress_end_line_ends_a_half_drawn_terminal_line_once() -> None:
    out = FakeTerminal()
    progress = Progress("cp", 4 << 20, mode="quiet", stream=out)
    progress.update(1 << 20)
    progress.end_line()
    progress.end_line()
    assert out.getvalue().endswith(" \n") and not out.getvalue().endswith("\n\n")


def test_a_ctrl_c_during_a_draw_still_ends_the_line() -> None:
    # The SIGINT handler runs between any two bytecodes: here, inside the write.
    progress: Progress

    class InterruptedTerminal(FakeTerminal):
        def write(self, text: str) -> int:
            written = super().write(text)
            if text.startswith("\r"):
                progress.end_line()  # what the handler does first
            return written

    out = InterruptedTerminal()
    progress = Progress("cp", 4 << 20, mode="quiet", stream=out)
    progress.update(1 << 20)
    assert out.getvalue().startswith("\rcp [") and out.getvalue().endswith(" \n")


def test_describe_says_each_fact_once_without_protocol_jargon() -> None:
    from muxstream import SessionGoneAway

    def broken(message: str, cause: BaseException) -> trio.BrokenResourceError:
        exc = trio.BrokenResourceError(message)
        exc.__cause__ = cause
        return exc

    before_status = broken("connection lost before the exit status",
                           broken("peer closed the session", SessionClosed("peer closed")))
    assert describe(before_status) == (
        "connection lost before the exit status: the server closed the session"
    )
    lost_twice = broken("connection lost during the copy",
                        ConnectionLost("connection lost: transport failed while writing"))
    assert describe(lost_twice) == (
        "connection lost during the copy: transport failed while writing"
    )
    goaway = describe(broken("peer sent GOAWAY", SessionGoneAway(3, 0)))
    assert goaway == "the server closed the session"
    refused = describe(broken("x", StreamResetError(RstStatus.REFUSED_STREAM)))
    assert refused is not None and "limit" in refused and "REFUSED_STREAM" not in refused
    no_token = argparse.Namespace(token=None, address=Address("127.0.0.1", 7000))
    assert describe(BadToken("bad token"), no_token) == (
        "no token given: set MUXSTREAM_TOKEN or --token (the server requires one)"
    )


def test_describe_reduces_a_repr_in_a_message_to_its_words() -> None:
    lost = trio.BrokenResourceError("x")
    lost.__cause__ = ConnectionLost(
        "transport failed while reading: ConnectionResetError(104, 'Connection reset by peer')"
    )
    assert describe(lost) == (
        "connection lost: transport failed while reading: Connection reset by peer"
    )
