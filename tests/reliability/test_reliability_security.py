"""Security of the exec service: every refusal, tested where it happens.

1. TLS by default beyond loopback (``serve_remote`` and ``muxstream serve``):
   refused without TLS, accepted with TLS or the explicit opt-out; no test binds
   anything but 127.0.0.1 (wildcard acceptance is checked at the bind call).
2. Tokens compared in constant time: SHA-256 digests of equal length through
   ``hmac.compare_digest``; every malformed ``Authorization`` is a 401 before
   any process starts (a spying backend counts the starts).
3. No shell injection through query parameters: shell metacharacters arrive as
   literal arguments; argv[0] tricks are refused 403/400; junk flags are 400.

Requests are written by hand (raw bytes over loopback TCP) so that they can be
as malformed as an attacker likes; docs/reliability.md lists what was tried.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hmac
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import muxstream
from muxstream import _auth
from muxstream._cli import _serve, _service, build_parser
from muxstream._cli._common import CliError
from muxstream.protocol import RstStatus
from muxstream.remote import (
    KubeApi,
    RemoteEndpoint,
    RemoteServerConfig,
    ServiceLimits,
    _server,
    run_remote,
    serve_remote,
)
from muxstream.remote._server_kubeapi import SubresourceRequest

from ._security_helpers import (
    ATTACH,
    EXEC,
    PORTFORWARD,
    TOKEN,
    TRANSPORTS,
    cli_service,
    exchange,
    exec_query,
    exec_service,
    plain_endpoint,
    tls_contexts,
    upgrade_head,
)

# --- 1. TLS by default beyond loopback -------------------------------------------------

LOOPBACK = ["127.0.0.1", "127.9.8.7", "::1", "localhost", "LocalHost"]
NOT_LOOPBACK = ["0.0.0.0", "::", "", None, "10.0.0.2", "192.0.2.1", "fe80::1", "example.com"]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert _auth.is_loopback_host(host)
    assert (
        _auth.exposure_problem(host, tls=False, insecure_no_auth=True, insecure_no_tls=False)
        is None
    )


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_wildcards_and_other_hosts_need_tls_and_auth(host: str | None) -> None:
    assert not _auth.is_loopback_host(host)
    problem = functools.partial(_auth.exposure_problem, host)
    assert problem(tls=False, insecure_no_auth=False, insecure_no_tls=False) == "tls"
    assert problem(tls=True, insecure_no_auth=False, insecure_no_tls=False) is None
    assert problem(tls=False, insecure_no_auth=False, insecure_no_tls=True) is None
    # No authentication beyond loopback has no opt-out, TLS or not.
    assert problem(tls=True, insecure_no_auth=True, insecure_no_tls=True) == "auth"


class _BindSpy:
    """Stands in for serve_http: records what serve_remote would bind, binds nothing."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, app: Any, port: int, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        kwargs["task_status"].started([])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.1"])
async def test_serve_remote_refuses_plain_tcp_beyond_loopback(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _BindSpy()
    monkeypatch.setattr(_server, "serve_http", spy)
    with pytest.raises(ValueError, match="without TLS") as info:
        await serve_remote(RemoteServerConfig(token=TOKEN), 0, host=host)
    assert "insecure_no_tls=True" in str(info.value)
    assert spy.calls == []  # refused before binding


async def test_serve_remote_refuses_no_auth_beyond_loopback_even_with_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _BindSpy()
    monkeypatch.setattr(_server, "serve_http", spy)
    server_context, _client = tls_contexts()
    config = RemoteServerConfig(insecure_no_auth=True, insecure_no_tls=True)
    with pytest.raises(ValueError, match="insecure_no_auth is for loopback only"):
        await serve_remote(config, 0, host="0.0.0.0", ssl_context=server_context)
    assert spy.calls == []


@pytest.mark.parametrize(
    ("tls", "opt_out"), [(True, False), (False, True)], ids=["tls", "insecure_no_tls"]
)
async def test_serve_remote_binds_a_wildcard_with_tls_or_the_opt_out(
    tls: bool, opt_out: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _BindSpy()
    monkeypatch.setattr(_server, "serve_http", spy)
    server_context = tls_contexts()[0] if tls else None
    config = RemoteServerConfig(token=TOKEN, insecure_no_tls=opt_out)
    await serve_remote(config, 0, host="0.0.0.0", ssl_context=server_context)
    assert len(spy.calls) == 1
    assert spy.calls[0]["host"] == "0.0.0.0"
    assert spy.calls[0]["ssl_context"] is server_context


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tls_service_runs_commands_and_refuses_plain_http(
    transport: str, tmp_path: Path
) -> None:
    server_context, client_context = tls_contexts()
    async with exec_service(tmp_path, ssl_context=server_context) as (port, spy):
        endpoint = RemoteEndpoint(
            f"https://127.0.0.1:{port}", token=TOKEN, ssl_context=client_context,
            transport=transport,  # type: ignore[arg-type]
        )
        result = await run_remote(endpoint, "demo", ["echo", "over tls"])
        assert result.stdout == b"over tls\n"
        plain = dataclasses.replace(endpoint, url=f"http://127.0.0.1:{port}")
        with pytest.raises(Exception):  # noqa: B017 - any failure; nothing may run
            with trio.fail_after(30):
                await run_remote(plain, "demo", ["touch", "ran"])
    assert len(spy.started) == 1
    assert not (tmp_path / "ran").exists()


def serve_args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["serve", *argv])
    assert isinstance(args, argparse.Namespace)
    return args


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (["-a", "0.0.0.0:0", "--token", TOKEN], "without TLS"),
        (["-a", "[::]:0", "--token", TOKEN], "without TLS"),
        (["-a", "192.0.2.1:7000"], "without TLS"),
        (["-a", "0.0.0.0:0", "--insecure-no-auth", "--insecure-no-tls"], "--insecure-no-auth"),
        (["-a", "0.0.0.0:0", "--insecure-no-auth", "--cert", "x.pem"], "--insecure-no-auth"),
        (["-a", "127.0.0.1:0", "--token", "two words"], "visible ASCII"),
        (["-a", "127.0.0.1:0", "--token", "caf\u00e9"], "visible ASCII"),
        (["-a", "0.0.0.0:0", "--token", TOKEN, "--insecure-no-tls"], None),
        (["-a", "0.0.0.0:0", "--token", TOKEN, "--cert", "x.pem", "--key", "x.key"], None),
        (["-a", "0.0.0.0:0", "--cert", "x.pem", "--insecure-no-auth", "--token", TOKEN], None),
        (["-a", "127.0.0.1:0", "--insecure-no-auth"], None),
        (["-a", "[::1]:0", "--insecure-no-auth"], None),
        (["-a", "localhost:0", "--token", TOKEN], None),
        (["--token", TOKEN], None),  # the default address is loopback
    ],
)
def test_cli_serve_policy(argv: list[str], refusal: str | None) -> None:
    if refusal is None:
        _serve.check_serve_args(serve_args(*argv))
    else:
        with pytest.raises(CliError, match=refusal):
            _serve.check_serve_args(serve_args(*argv))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("how", ["tls", "insecure-no-tls", "refused"])
async def test_cli_serve_binds_a_wildcard_only_with_tls_or_the_opt_out(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve_main` itself, up to the bind call (a spy: nothing is bound)."""
    binds: list[str] = []

    async def fake_open_tcp_listeners(port: int, *, host: str, **kwargs: Any) -> None:
        binds.append(host)
        raise _Stop

    monkeypatch.setattr(trio, "open_tcp_listeners", fake_open_tcp_listeners)
    pem = tmp_path / "server.pem"
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    cert = ca.issue_cert("server.example", key_type=trustme.KeyType.ECDSA)
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    extra = {
        "tls": ["--cert", str(pem), "--key", str(pem)],
        "insecure-no-tls": ["--insecure-no-tls"],
        "refused": [],
    }[how]
    args = serve_args("-a", "0.0.0.0:0", "--token", TOKEN, *extra)
    if how == "refused":
        with pytest.raises(CliError, match="without TLS"):
            await _serve.serve_main(args)
        assert binds == []
    else:
        with pytest.raises(BaseExceptionGroup) as info:
            await _serve.serve_main(args)
        assert info.group_contains(_Stop)
        assert binds == ["0.0.0.0"]


def test_cli_serve_refusal_is_one_line_and_exit_status_1() -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: even if the check
    # were missing, nothing could be bound (the test would fail on the message).
    result = subprocess.run(
        [sys.executable, "-m", "muxstream", "serve", "-a", "192.0.2.1:0", "--token", TOKEN],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("MUXSTREAM_")},
    )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("muxstream serve: error: refusing to serve on 192.0.2.1 without TLS")
    assert "--insecure-no-tls" in lines[0]
    assert b"listening" not in result.stdout


def test_remote_config_refuses_tokens_that_cannot_travel_intact() -> None:
    for bad in ("two words", "caf\u00e9", "tab\there", "nul\x00"):
        with pytest.raises(ValueError, match="visible ASCII"):
            RemoteServerConfig(token=bad)


# --- 2. Tokens compared in constant time ----------------------------------------------


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every hmac.compare_digest call's argument lengths (the real one still runs)."""
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module _auth calls through
    return seen


WRONG_TOKENS = ["x", "security-test-tokeN", "a" * 4096, "", "caf\u00e9\u2603", "\udcff"]


@pytest.mark.parametrize("presented", WRONG_TOKENS)
def test_token_checks_compare_fixed_length_digests(
    presented: str, comparisons: list[tuple[int, int]]
) -> None:
    assert not _auth.bearer_token_matches(TOKEN, f"Bearer {presented}")
    assert not _service.authorized(TOKEN, f"Bearer {presented}")
    assert comparisons == [(32, 32), (32, 32)]
    assert _auth.bearer_token_matches(TOKEN, f"Bearer {TOKEN}")


def test_token_check_compares_even_for_another_scheme(
    comparisons: list[tuple[int, int]],
) -> None:
    assert not _auth.bearer_token_matches(TOKEN, f"Basic {TOKEN}")
    assert not _auth.bearer_token_matches(TOKEN, None)
    assert comparisons == [(32, 32), (32, 32)]


async def test_server_compares_digests_for_a_short_wrong_token(
    tmp_path: Path, comparisons: list[tuple[int, int]]
) -> None:
    async with exec_service(tmp_path) as (port, spy):
        head = upgrade_head(exec_query("echo", "hi"), authorization=[b"Bearer short"])
        status, _body = await exchange(port, head)
    assert status == 401
    assert comparisons and all(a == b == 32 for a, b in comparisons)
    assert spy.started == []


AUTHORIZATIONS: dict[str, list[bytes]] = {
    "missing": [],
    "wrong token, same length": [b"Bearer " + b"x" * len(TOKEN)],
    "wrong token, longer": [b"Bearer " + TOKEN.encode() + b"x"],
    "prefix of the token": [b"Bearer " + TOKEN[:-1].encode()],
    "wrong scheme": [b"Basic " + TOKEN.encode()],
    "token alone": [TOKEN.encode()],
    "scheme alone": [b"Bearer"],
    "empty token": [b"Bearer "],
    "non-ASCII bytes": [b"Bearer \xff\xfe\x80" + TOKEN.encode()],
    "UTF-8 token": ["Bearer caf\u00e9".encode()],
    "two headers, good then bad": [b"Bearer " + TOKEN.encode(), b"Bearer nope"],
    "two headers, bad then good": [b"Bearer nope", b"Bearer " + TOKEN.encode()],
}


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("name", list(AUTHORIZATIONS))
async def test_bad_credentials_are_401_before_any_process_starts(
    name: str, kind: str, tmp_path: Path
) -> None:
    async with exec_service(tmp_path) as (port, spy):
        for target in (exec_query("touch", "ran"), ATTACH + "?stdin=true", PORTFORWARD):
            head = upgrade_head(target, authorization=AUTHORIZATIONS[name], kind=kind)
            status, body = await exchange(port, head)
            assert status == 401, (target, status, body)
            assert b'"reason": "Unauthorized"' in body
        # The same server, the right token: the spy does see a start.
        assert (await run_remote(plain_endpoint(port, kind), "demo", ["true"])).returncode == 0
    assert not (tmp_path / "ran").exists()
    assert [r.command for r in spy.started] == [("true",)]


async def test_malformed_header_bytes_are_refused_without_a_crash(tmp_path: Path) -> None:
    """Control bytes in a header and raw non-ASCII in the target: 400 or 401, never
    a 500 or a dropped server."""
    async with exec_service(tmp_path) as (port, spy):
        # h11 refuses NUL; other control bytes pass its lax field check and meet ours.
        for authorization, expected in (
            (b"Bearer \x00" + TOKEN.encode(), 400),
            (b"Bearer \x01\x7f" + TOKEN.encode(), 401),
        ):
            head = upgrade_head(exec_query("touch", "ran"), authorization=[authorization])
            status, _body = await exchange(port, head)
            assert status == expected, (authorization, status)
        raw_target = f"{EXEC}?command=touch&command=ran\xff".encode("latin-1")
        status, _body = await exchange(port, upgrade_head("X").replace(b"X", raw_target, 1))
        assert status == 400
        # Still serving afterwards.
        assert (await run_remote(plain_endpoint(port, "spdy"), "demo", ["true"])).returncode == 0
    assert not (tmp_path / "ran").exists()
    assert [r.command for r in spy.started] == [("true",)]


async def test_cli_service_refuses_bad_credentials_on_every_path(tmp_path: Path) -> None:
    # Dozens of failures from one address: the throttle (tested on its own in
    # test_reliability_tokens) would hold each answer; here every refusal counts.
    patient = ServiceLimits(auth_failure_burst=1000)
    async with cli_service(tmp_path, limits=patient) as (port, spy):
        for name, authorization in AUTHORIZATIONS.items():
            for target in ("/muxstream", exec_query("touch", "ran")):
                head = upgrade_head(target, authorization=authorization)
                status, _body = await exchange(port, head)
                assert status == 401, (name, target, status)
        # Raw sessions: credentials travel per stream; a bad one is reset
        # INVALID_CREDENTIALS before the service runs.
        # (A session is closed after a few failures: one session per bad value.)
        for value in (None, "Bearer nope", "Basic x", "Bearer ", "Bearer caf\u00e9\u2603"):
            transport = await trio.open_tcp_stream("127.0.0.1", port)
            async with muxstream.open_session(transport, role=muxstream.CLIENT) as session:
                headers = {"service": "echo"}
                if value is not None:
                    headers["authorization"] = value
                stream = await session.open_stream(headers=headers)
                with trio.fail_after(30), pytest.raises(trio.BrokenResourceError) as info:
                    await stream.receive_some()
                assert getattr(info.value.__cause__, "status", None) == (
                    RstStatus.INVALID_CREDENTIALS
                )
        transport = await trio.open_tcp_stream("127.0.0.1", port)
        async with muxstream.open_session(transport, role=muxstream.CLIENT) as session:
            good = await session.open_stream(
                headers={"service": "echo", "authorization": f"Bearer {TOKEN}"}
            )
            await good.send_all(b"ok")
            await good.send_eof()
            assert await good.receive_all() == b"ok"
    assert spy.started == []
    assert not (tmp_path / "ran").exists()


# --- 3. No shell injection through query parameters -----------------------------------

#: Arguments a shell would act on; without one they are just text for echo.
METACHARACTERS = [
    "; touch pwned",
    "| touch pwned",
    "&& touch pwned",
    "|| touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "> pwned",
    ">> pwned 2>&1",
    "< /etc/passwd",
    "\ntouch pwned",
    "*",
    "sentinel*",
    "$HOME",
    "${IFS}touch${IFS}pwned",
    "~",
    "'\"\\",
    "%s%n%x",
    "-n",  # an option: reaches echo as an argument, which is echo's business
]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_shell_metacharacters_reach_the_command_literally(
    transport: str, tmp_path: Path
) -> None:
    (tmp_path / "sentinel").write_text("a file a glob would match")
    async with exec_service(tmp_path, allowed_commands={"echo"}) as (port, spy):
        endpoint = plain_endpoint(port, transport)
        for argument in METACHARACTERS:
            if argument == "-n":
                continue
            result = await run_remote(endpoint, "demo", ["echo", argument])
            assert result.stdout == argument.encode() + b"\n", argument
        result = await run_remote(endpoint, "demo", ["echo", *METACHARACTERS])
        assert result.stdout == " ".join(METACHARACTERS).encode() + b"\n"
    assert sorted(os.listdir(tmp_path)) == ["sentinel"]
    assert len(spy.started) == len(METACHARACTERS)


#: (argv, expected status) with allowed_commands={"echo"}; nothing may start.
REFUSED_COMMANDS: list[tuple[list[str], int]] = [
    (["/bin/sh", "-c", "touch pwned"], 403),
    (["../../bin/sh", "-c", "touch pwned"], 403),
    (["echo;sh"], 403),
    (["echo; touch pwned"], 403),
    (["echo touch pwned"], 403),
    (["$(touch pwned)"], 403),
    (["sh", "-c", "touch pwned"], 403),
    (["/bin/echo", "hi"], 403),  # exact match: a path to an allowed name is not it
    (["./echo"], 403),
    (["ECHO"], 403),
    ([" echo"], 403),
    (["echo\t"], 403),
    (["touch", "pwned"], 403),
    ([""], 400),
    (["", "touch", "pwned"], 400),
    (["echo", "a\x00b"], 400),
    (["echo\x00", "x"], 400),
    ([], 400),
]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_argv0_tricks_are_refused_before_anything_runs(kind: str, tmp_path: Path) -> None:
    async with exec_service(tmp_path, allowed_commands={"echo"}) as (port, spy):
        for argv, expected in REFUSED_COMMANDS:
            status, body = await exchange(port, upgrade_head(exec_query(*argv), kind=kind))
            assert status == expected, (argv, status, body)
            assert b'"status": "Failure"' in body
    assert spy.started == []
    assert os.listdir(tmp_path) == []


async def test_without_an_allow_list_empty_or_nul_commands_are_still_400(
    tmp_path: Path,
) -> None:
    async with exec_service(tmp_path) as (port, spy):
        for argv in ([""], ["", "sh"], ["sh", "-c", "touch pwned\x00"], []):
            status, body = await exchange(port, upgrade_head(exec_query(*argv)))
            assert status == 400, (argv, status, body)
    assert spy.started == []


#: Query strings written by hand (percent-encoding tricks included) -> status.
RAW_QUERIES: list[tuple[str, str, int]] = [
    (EXEC, "command=echo%3Bsh", 403),
    (EXEC, "command=echo+sh", 403),
    (EXEC, "command=%2Fbin%2Fsh&command=-c&command=touch+pwned", 403),
    (EXEC, "command=..%2F..%2Fbin%2Fsh", 403),
    (EXEC, "command=%ff", 403),
    (EXEC, "command=&command=echo", 400),
    (EXEC, "command=echo&command=%00", 400),
    (EXEC, "command=echo&tty=banana", 400),
    (EXEC, "command=echo&stdin=maybe", 400),
    (EXEC, "command=echo&stdout=2", 400),
    (EXEC, "command=echo&stderr=", 400),
    (EXEC, "command=echo&tty=true&tty=yes", 400),
    (EXEC, "command=echo&tty=%ff", 400),
    (EXEC, "command=echo&container=nope", 400),
    (EXEC, "command=echo&container=", 400),
    (EXEC, "command=echo&container=..%2Fmain", 400),
    (ATTACH, "stdin=sure", 400),
    (ATTACH, "container=nope", 400),
    (EXEC, "tty=true", 400),  # no command at all
]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_malformed_queries_are_a_clear_400_or_403(kind: str, tmp_path: Path) -> None:
    async with exec_service(tmp_path, allowed_commands={"echo"}) as (port, spy):
        for path, query, expected in RAW_QUERIES:
            status, body = await exchange(port, upgrade_head(f"{path}?{query}", kind=kind))
            assert status == expected, (query, status, body)
            assert b'"message"' in body
        assert spy.started == []
        # Valid spellings of the same flags are accepted (Go's strconv.ParseBool).
        for flags in ("stdin=1&tty=T", "stdin=FALSE&tty=f&stderr=False", "stdout=t"):
            head = upgrade_head(f"{EXEC}?command=echo&{flags}", kind=kind)
            assert (await exchange(port, head))[0] == 101, flags
    assert os.listdir(tmp_path) == []


def test_junk_flag_messages_name_the_parameter() -> None:
    api = KubeApi({"demo": ["main"]})
    target = api.parse_subresource(f"{EXEC}?command=echo&tty=banana")
    assert isinstance(target, SubresourceRequest)
    assert target.query_error() == "invalid value 'banana' for tty: must be true or false"

