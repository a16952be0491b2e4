"""Usage errors are caught while parsing: one line naming the option, exit status 2,
before anything connects (issue 14, items 5 and 8)."""

from __future__ import annotations

import json

import pytest

from muxstream._cli import build_parser, main

from .conftest import Served, cli_env, client_env, free_port, muxstream, muxstream_many

USAGE = 2


def test_bad_numbers_are_usage_errors_at_parse_time() -> None:
    # Nothing listens there: a check that came after connecting would say so instead.
    env = cli_env(MUXSTREAM_ADDRESS=f"127.0.0.1:{free_port()}", MUXSTREAM_TOKEN="t")
    runs = {
        "-c/--count": ["ping", "-c", "0"],
        "--count": ["ping", "--count", "-1"],
        "-i/--interval": ["ping", "-i", "-1"],
        "-n/--streams": ["echo", "--streams", "-3", "hi"],
        "--timeout": ["ping", "--timeout", "0"],
        "--close-timeout": ["serve", "--close-timeout", "-1"],
        "nan": ["ping", "-i", "nan"],
    }
    for (needle, argv), result in zip(
        runs.items(), muxstream_many(list(runs.values()), env=env), strict=True
    ):
        stderr = result.stderr.decode()
        assert result.returncode == USAGE, (argv, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"muxstream {argv[0]}: error: "), lines[0]
        assert needle in lines[0] and "Traceback" not in stderr


def test_exec_without_a_command_is_a_usage_error() -> None:
    result = muxstream("exec", "demo", "--", env=cli_env())
    assert result.returncode == USAGE
    assert b"no command given" in result.stderr


@pytest.mark.parametrize(
    ("argv", "pod", "command"),
    [
        (["exec", "demo", "--", "uname", "-a"], "demo", ["uname", "-a"]),
        (["exec", "-it", "pod/web", "--", "sh"], "web", ["sh"]),
        (["exec", "--", "sh", "-c", "echo -- x"], "demo", ["sh", "-c", "echo -- x"]),
        (["exec", "uname", "-v=3"], "demo", ["uname", "-v=3"]),
    ],
)
def test_exec_reads_the_pod_before_the_double_dash_as_kubectl_does(
    argv: list[str], pod: str, command: list[str]
) -> None:
    args = build_parser().parse_args(argv)
    from muxstream._cli import _kubectl_forms

    _kubectl_forms(args)
    assert (args.pod, args.command) == (pod, command)


def test_attach_and_port_forward_take_the_pod_as_kubectl_does() -> None:
    from muxstream._cli import _kubectl_forms

    args = build_parser().parse_args(["attach", "-it", "demo"])
    _kubectl_forms(args)
    assert args.pod == "demo"
    args = build_parser().parse_args(["port-forward", "pods/web", "8080:80", ":81"])
    _kubectl_forms(args)
    assert (args.pod, args.ports) == ("web", [(8080, 80), (0, 81)])
    with pytest.raises(SystemExit) as exited:
        main(["exec", "deployment/web", "--", "true"])
    assert exited.value.code == USAGE


@pytest.mark.parametrize(
    ("argv", "level"),
    [(["exec", "-v=6", "--", "x"], 6), (["--v=2", "ping"], 2), (["-vv", "echo"], 2),
     (["-v", "ping"], 1), (["ping", "-v"], 1), (["ping"], 0)],
)
def test_verbosity_accepts_kubectl_levels(argv: list[str], level: int) -> None:
    assert build_parser().parse_args(argv).verbose == level


def test_exec_in_the_named_pod_runs_the_command_there(server: Served) -> None:
    env = client_env(server)
    ok, other = muxstream_many(
        [["exec", "demo", "--", "echo", "in demo"], ["exec", "web", "--", "true"]], env=env
    )
    assert (ok.returncode, ok.stdout) == (0, b"in demo\n"), ok.stderr
    # Another name is not silently run as a program called "web": the server says
    # which pod it serves.
    assert other.returncode == 1
    assert b'pods "web" not found' in other.stderr
    assert b'`muxstream serve` serves one pod, "demo"' in other.stderr


def test_verbose_shows_connection_upgrade_and_protocol(server: Served) -> None:
    env = client_env(server)
    ws, spdy, ping, quiet = muxstream_many([
        ["exec", "-v", "--", "true"],
        ["exec", "-v=6", "--transport", "spdy", "--", "true"],
        ["ping", "-v", "-c", "1"],
        ["exec", "--", "true"],
    ], env=env)
    for result in (ws, spdy, ping, quiet):
        assert result.returncode == 0, result.stderr
    text = ws.stderr.decode()
    assert f"muxstream exec: connecting to {server.address} (TCP)" in text
    assert "muxstream exec: upgrade to WebSocket, offering v5.channel.k8s.io" in text
    assert "muxstream exec: upgraded to WebSocket, protocol v5.channel.k8s.io" in text
    assert "upgraded to SPDY/3.1, protocol v5.channel.k8s.io" in spdy.stderr.decode()
    assert "muxstream ping: SPDY/3.1 session over TCP" in ping.stderr.decode()
    assert quiet.stderr == b""


def test_bench_says_which_server_and_address_means_yours(server: Served) -> None:
    yours, nothing_there = muxstream_many([
        ["bench", "-a", server.address, "--size", "4M", "--json"],
        ["bench", "-a", f"127.0.0.1:{free_port()}", "--size", "4M"],
    ], env=client_env(server))
    assert yours.returncode == 0, yours.stderr
    report = json.loads(yours.stdout)
    assert (report["server"], report["server_spawned"]) == (server.address, False)
    # An address where nothing listens is an error, not a silently spawned server.
    assert nothing_there.returncode == 1
    assert b"connection refused" in nothing_there.stderr
    spawned = muxstream("bench", "--size", "4M", env=cli_env(MUXSTREAM_TOKEN="x"))
    assert spawned.returncode == 0, spawned.stderr
    first = spawned.stdout.decode().splitlines()[0]
    assert first.startswith("bench: measuring a server spawned for this run on 127.0.0.1:")
