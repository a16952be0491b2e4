"""`muxstream kube ...` run as a user runs it (a subprocess), next to the stock kubectl."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ._kube_helpers import KUBECTL, Endpoint, echo_handler, kube_endpoint


async def mux(
    ep: Endpoint, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
    kubeconfig: bool = True,
) -> trio.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "muxstream", "kube", *args]
    if kubeconfig:
        argv.insert(5, f"--kubeconfig={ep.kubeconfig}")
    with trio.fail_after(60):
        return await trio.run_process(
            argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, **(env or {})},
        )


async def test_exec_passes_stdin_output_and_exit_code_like_kubectl(tmp_path: Path) -> None:
    script = "tr a-z A-Z; echo to-stderr >&2; exit 3"
    async with kube_endpoint(tmp_path) as ep:
        ours = await mux(ep, "exec", "-i", "demo", "--", "sh", "-c", script, stdin=b"hi\n")
        assert (ours.returncode, ours.stdout, ours.stderr) == (3, b"HI\n", b"to-stderr\n")
        if KUBECTL is not None:
            theirs = await ep.kubectl("exec", "-i", "demo", "--", "sh", "-c", script,
                                      stdin=b"hi\n")
            assert (theirs.returncode, theirs.stdout) == (ours.returncode, ours.stdout)


async def test_exec_flags_after_the_pod_and_kubeconfig_from_the_environment(
    tmp_path: Path,
) -> None:
    async with kube_endpoint(tmp_path) as ep:
        ours = await mux(
            ep, "exec", "pod/demo", "-c", "main", "-n", "default", "--context", "mux",
            "--transport", "spdy", "--", "sh", "-c", 'echo "$@"', "--", "ok",
            env={"KUBECONFIG": str(ep.kubeconfig)}, kubeconfig=False,
        )
    assert (ours.returncode, ours.stdout) == (0, b"ok\n"), ours.stderr


async def test_pod_not_found_is_one_line_and_exit_1_like_kubectl(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep:
        ours = await mux(ep, "exec", "nope", "--", "true")
        prefix = b'muxstream kube: error: Error from server (NotFound): pods "nope" not found'
        assert ours.returncode == 1
        assert ours.stderr.startswith(prefix) and ours.stderr.count(b"\n") == 1
        if KUBECTL is not None:
            theirs = await ep.kubectl("exec", "nope", "--", "true")
            # kubectl prints the same "Error from server (Reason): message" line
            assert theirs.returncode == 1
            assert ours.stderr.removeprefix(b"muxstream kube: error: ") in theirs.stderr


async def test_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep:
        ours = await mux(ep, "exec", "--kubeconfig", str(tmp_path / "none"), "demo", "--", "true",
                         kubeconfig=False)
    assert ours.returncode == 1
    assert ours.stderr == f"muxstream kube: error: {tmp_path / 'none'}: no such file\n".encode()


async def test_without_pyyaml_the_cli_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "yaml"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named yaml')\n")
    async with kube_endpoint(tmp_path) as ep:
        ours = await mux(ep, "exec", "demo", "--", "true",
                         env={"PYTHONPATH": str(fake.parent)})
    assert ours.returncode == 1
    assert b"needs PyYAML: pip install 'muxstream[kube]'" in ours.stderr
    assert ours.stderr.count(b"\n") == 1


async def test_attach(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep:
        ours = await mux(ep, "attach", "-i", "demo", "-c", "main", stdin=b"hello\nquit\n")
    assert (ours.returncode, ours.stdout) == (0, b"got hello\n"), ours.stderr


async def test_cp_both_ways_with_namespace_prefix(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = tmp_path / "remote" / "copy.bin"
    remote.parent.mkdir()
    back = tmp_path / "back.bin"
    async with kube_endpoint(tmp_path) as ep:
        up = await mux(ep, "cp", str(source), f"default/demo:{remote}")
        assert up.returncode == 0, up.stderr
        down = await mux(ep, "cp", "-c", "main", f"demo:{remote}", str(back))
        assert down.returncode == 0, down.stderr
    digest = hashlib.sha256(source.read_bytes()).digest()
    assert hashlib.sha256(remote.read_bytes()).digest() == digest
    assert hashlib.sha256(back.read_bytes()).digest() == digest


async def test_cp_resume_continues_a_partial_copy_into_a_directory(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    into = tmp_path / "data"
    into.mkdir()
    # What a cut `cp --resume` leaves behind: the first bytes under the fixed name.
    (into / ".model.bin.muxstream-resume.part").write_bytes(source.read_bytes()[:700_000])
    async with kube_endpoint(tmp_path) as ep:
        up = await mux(ep, "cp", "--resume", "--json", str(source), f"demo:{into}/")
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["destination"] == f"{into}/model.bin"
    assert (report["resumed_from"], report["digest_verified"]) == (700_000, True)
    assert (into / "model.bin").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in into.iterdir()) == ["model.bin"]


async def test_port_forward_until_interrupted(tmp_path: Path) -> None:
    async with kube_endpoint(tmp_path) as ep, trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo_handler, 0)
        remote_port = listeners[0].socket.getsockname()[1]
        process = await nursery.start(
            lambda task_status: trio.run_process(
                [sys.executable, "-m", "muxstream", "kube", "port-forward",
                 f"--kubeconfig={ep.kubeconfig}", "pod/demo", f":{remote_port}"],
                stdout=subprocess.PIPE, check=False, task_status=task_status,
            )
        )
        with trio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
            assert line.startswith(b"Forwarding from 127.0.0.1:")
            local_port = int(line.split(b":")[1].split(b" ")[0])
            assert line.endswith(f"-> {remote_port}\n".encode())
            client = await trio.open_tcp_stream("127.0.0.1", local_port)
            async with client:
                await client.send_all(b"through the pod")
                await client.send_eof()
                got = b""
                while chunk := await client.receive_some(65536):
                    got += chunk
            assert got == b"through the pod"
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        nursery.cancel_scope.cancel()


async def test_cluster_example_runs_against_the_endpoint(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "cluster_exec.py"
    (tmp_path / "pod-tmp").mkdir()
    async with kube_endpoint(tmp_path) as ep:
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, str(example), "--kubeconfig", str(ep.kubeconfig), "demo",
                 "--size", "300000", "--remote-dir", str(tmp_path / "pod-tmp")],
                capture_stdout=True, capture_stderr=True, check=False,
            )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert "exec: 'Linux', exit code 3" in out
    assert "interactive: b'ping\\n', exit code 0" in out
    assert "copy_to: 300,000 of 300,000 bytes" in out
    assert "copy round trip: identical" in out
    assert not any((tmp_path / "pod-tmp").iterdir())  # the example cleans up


async def test_default_container_from_the_annotation_is_silent_like_kubectl(
    tmp_path: Path,
) -> None:
    from muxstream.remote import KubeApi

    # The endpoint annotates its pods with kubectl.kubernetes.io/default-container.
    api = KubeApi({"demo": ["main", "sidecar"]})
    async with kube_endpoint(tmp_path, api=api) as ep:
        ours = await mux(ep, "exec", "demo", "--", "echo", "hi")
        assert (ours.returncode, ours.stdout, ours.stderr) == (0, b"hi\n", b"")
        if KUBECTL is not None:
            theirs = await ep.kubectl("exec", "demo", "--", "echo", "hi")
            assert (theirs.returncode, theirs.stdout, theirs.stderr) == (0, b"hi\n", b"")


@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_kube_cp_resume_continues_a_cut_copy(tmp_path: Path, direction: str) -> None:
    """The connection is cut mid-copy (the copy tests' cutting proxy, in front
    of the TLS endpoint); `kube cp --resume` then continues to an identical file."""
    import json

    import trio.testing

    from ._remote_helpers import cutting_proxy

    size = 6 << 20
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(size))
    dest = tmp_path / "dest"
    dest.mkdir()
    upload = direction == "upload"
    argv = (["cp", "--resume", str(source), f"demo:{dest}/copy.bin"] if upload
            else ["cp", "--resume", f"demo:{source}", str(dest / "copy.bin")])
    async with kube_endpoint(tmp_path) as ep:
        async with cutting_proxy(ep.port, size // 2, downstream=not upload) as (port, cut):
            via_proxy = tmp_path / "via-proxy.yaml"
            via_proxy.write_text(ep.kubeconfig.read_text().replace(f":{ep.port}", f":{port}"))
            first = await mux(ep, f"--kubeconfig={via_proxy}", *argv, kubeconfig=False)
        assert cut.is_set()
        assert first.returncode == 1 and first.stderr.count(b"\n") == 1, first.stderr
        assert b"partial copy stays" in first.stderr and b"--resume" in first.stderr
        await trio.testing.wait_all_tasks_blocked()  # the server has ended the cut command
        [partial] = [p for p in dest.iterdir() if ".muxstream-" in p.name]
        kept = partial.stat().st_size
        assert 0 < kept < size and not (dest / "copy.bin").exists()
        resumed = await mux(ep, *argv, "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed_from"] == kept and report["bytes"] == size - kept
    assert report["digest_verified"] is True
    assert (dest / "copy.bin").read_bytes() == source.read_bytes()
    assert [p for p in dest.iterdir() if ".muxstream-" in p.name] == []
