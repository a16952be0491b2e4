"""exec_server.py and kubectl_server.py beyond loopback: TLS, or the explicit
``--insecure-no-tls`` opt-out, or a one-line refusal (exit status 1) before
anything binds; and their TLS options end to end on loopback.

No test here listens beyond loopback. Subprocess refusals use 192.0.2.1
(TEST-NET-1: were the check missing, binding it would fail, never listen); the
wildcard and the opt-out run the example's ``main`` in-process with
``serve_http`` replaced by a spy that binds nothing.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme

from muxstream.remote import _server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "example-token-0123456789"
TIMEOUT = 60
NO_TLS = "refusing to serve without TLS on host="
NO_AUTH = "refusing to serve without authentication on host="


def run_example(name: str, *argv: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *argv],
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, env=env,
    )


def load_example(name: str) -> ModuleType:
    """Import examples/<name> as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name[:-3]}", EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BindSpy:
    """Stands in for serve_http under serve_remote: records the call, binds
    nothing, and fails as binding an address this machine lacks would."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, app: Any, port: int, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address (spy)")


@pytest.fixture
def bind_spy(monkeypatch: pytest.MonkeyPatch) -> BindSpy:
    spy = BindSpy()
    monkeypatch.setattr(_server, "serve_http", spy)
    return spy


async def run_main(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str | None:
    monkeypatch.setattr(sys, "argv", [name, "--port", "0", *argv])
    with trio.fail_after(TIMEOUT):
        result: str | None = await load_example(name).main()
    return result


def write_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths


@pytest.mark.parametrize(
    ("example", "argv", "refusal"),
    [
        ("exec_server.py", ["--token", TOKEN], NO_TLS),
        ("kubectl_server.py", ["--token", TOKEN], NO_TLS),
        ("kubectl_server.py", ["--insecure-no-auth"], NO_AUTH),
        ("kubectl_server.py", ["--insecure-no-auth", "--insecure-no-tls"], NO_AUTH),
    ],
)
def test_server_example_beyond_loopback_refuses_in_one_line(
    example: str, argv: list[str], refusal: str
) -> None:
    result = run_example(example, "--host", "192.0.2.1", "--port", "0", *argv)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    # One line, no traceback; the refusal (not "cannot listen") shows nothing was bound.
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{example[:-3]}: error: {refusal}'192.0.2.1'"), line


@pytest.mark.parametrize(
    ("example", "argv", "refusal"),
    [
        ("exec_server.py", ["--token", TOKEN], NO_TLS),
        ("kubectl_server.py", ["--token", TOKEN], NO_TLS),
        ("kubectl_server.py", ["--insecure-no-auth"], NO_AUTH),
    ],
)
async def test_server_example_refuses_a_wildcard_before_binding(
    example: str, argv: list[str], refusal: str, bind_spy: BindSpy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = await run_main(example, ["--host", "0.0.0.0", *argv], monkeypatch)
    assert result is not None and result.startswith(f"{example[:-3]}: error: {refusal}")
    assert "\n" not in result
    assert bind_spy.calls == []


@pytest.mark.parametrize("example", ["exec_server.py", "kubectl_server.py"])
async def test_insecure_no_tls_lets_a_server_example_bind_beyond_loopback(
    example: str, bind_spy: BindSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--host", "0.0.0.0", "--token", TOKEN, "--insecure-no-tls"]
    result = await run_main(example, argv, monkeypatch)
    assert [(call["host"], call["ssl_context"]) for call in bind_spy.calls] == [("0.0.0.0", None)]
    # A bind error is one line too.
    assert result == f"{example[:-3]}: error: cannot listen on 0.0.0.0:0: " + (
        f"[Errno {errno.EADDRNOTAVAIL}] Cannot assign requested address (spy)"
    )


@pytest.mark.parametrize("example", ["exec_server.py", "kubectl_server.py"])
async def test_tls_lets_a_server_example_bind_beyond_loopback(
    example: str, tmp_path: Path, bind_spy: BindSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    if example == "exec_server.py":
        _ca, cert, key = write_server_cert(tmp_path)
        tls = ["--cert", str(cert), "--key", str(key)]
    else:
        tls = ["--tls-dir", str(tmp_path)]
    argv = ["--host", "0.0.0.0", "--token", TOKEN, *tls]
    result = await run_main(example, argv, monkeypatch)
    assert result is not None and "cannot listen on 0.0.0.0:0" in result
    [call] = bind_spy.calls
    assert call["host"] == "0.0.0.0" and call["ssl_context"] is not None


def test_exec_server_serves_tls_to_exec_client(tmp_path: Path) -> None:
    ca, cert, key = write_server_cert(tmp_path)
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "exec_server.py"), "--port", "0", "--token", TOKEN,
         "--cert", str(cert), "--key", str(key), "--backend", "inprocess"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+) \(https\)", banner)
        assert match, banner
        url = f"https://127.0.0.1:{match.group(1)}"
        trusting = {**os.environ, "SSL_CERT_FILE": str(ca)}  # the docstring's advice
        client = run_example("exec_client.py", "--url", url, "--token", TOKEN,
                             "--", "echo", "over", "tls", env=trusting)
        assert (client.returncode, client.stdout) == (0, "over tls\n"), client.stderr
        # Without the CA the client refuses the certificate, in one line.
        untrusting = {**os.environ, "SSL_CERT_FILE": os.devnull}
        refused = run_example("exec_client.py", "--url", url, "--token", TOKEN,
                              "--", "echo", "x", env=untrusting)
        assert refused.returncode == 1 and refused.stdout == ""
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=TIMEOUT)


@pytest.mark.parametrize(
    "cert_args", [["--cert", "x.pem"], ["--cert", "/nonexistent", "--key", "/k"]]
)
def test_exec_server_bad_tls_arguments_are_usage_errors(cert_args: list[str]) -> None:
    result = run_example("exec_server.py", "--port", "0", "--token", TOKEN, *cert_args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("exec_server.py: error: ")


@pytest.mark.parametrize(
    ("host", "server"),
    [("127.0.0.2", "https://127.0.0.2:6443"), ("0.0.0.0", "https://127.0.0.1:6443"),
     ("::1", "https://[::1]:6443")],
)
def test_kubectl_server_kubeconfig_names_the_bound_host(
    host: str, server: str, tmp_path: Path
) -> None:
    example = load_example("kubectl_server.py")
    path = example.write_kubeconfig(str(tmp_path), host, 6443, TOKEN)
    assert f"server: {server}\n" in Path(path).read_text()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_server_with_tls_on_another_address(tmp_path: Path) -> None:
    """127.0.0.2: still loopback, but not the default; the certificate and the
    kubeconfig follow --host, so kubectl verifies and connects there."""
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "kubectl_server.py"), "--host", "127.0.0.2",
         "--port", "0", "--token", TOKEN, "--tls-dir", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # kubeconfig: ...
        assert re.match(r"serving on 127\.0\.0\.2:\d+", server.stdout.readline())
        kubectl = subprocess.run(
            ["kubectl", f"--kubeconfig={tmp_path / 'kubeconfig.yaml'}",
             f"--cache-dir={tmp_path / 'cache'}", "exec", "demo", "--", "echo", "via 127.0.0.2"],
            capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )
        assert (kubectl.returncode, kubectl.stdout) == (0, "via 127.0.0.2\n"), kubectl.stderr
    finally:
        server.terminate()
        server.wait(timeout=TIMEOUT)
