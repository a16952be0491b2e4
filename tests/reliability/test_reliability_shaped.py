"""The close path over a shaped link: two network namespaces joined by a veth pair
whose both ends are rate-limited by tc tbf (20 Mbit/s, a deep queue).

A producer in one namespace sends to a slow, pinging consumer in the other and
closes right after its last ``send_all``; every byte must arrive, run after run.
The test creates (and deletes) its own namespaces; addresses are 10.200.x.x,
which exist only inside them. Skipped, with the reason, where namespaces cannot
be created (not root, no iproute2, no netns support).

The control runs the same transfer with a naive close (the producer closes its
socket where muxstream sends FIN and drains): it must lose data within
``MUXSTREAM_SHAPED_NAIVE_TRIES`` runs (CI: 3; it lost data in 40 of 40 measured
runs), or the close test could not fail on this link.

``MUXSTREAM_SHAPED_RUNS`` (CI: 3) and ``MUXSTREAM_SHAPED_BYTES`` (CI: 6 MiB) set
the size; docs/reliability.md has the full run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ._helpers import env_int

RUNS = env_int("MUXSTREAM_SHAPED_RUNS", 3)
TOTAL = env_int("MUXSTREAM_SHAPED_BYTES", 6 * 1024 * 1024)
EXPECTED = TOTAL // (256 * 1024) * (256 * 1024)  # the peers send whole 256 KiB chunks
NAIVE_TRIES = env_int("MUXSTREAM_SHAPED_NAIVE_TRIES", 3)
RATE = os.environ.get("MUXSTREAM_SHAPED_RATE", "20mbit")
PEER = Path(__file__).with_name("_netns_peer.py")
REPO = Path(__file__).parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def shaped_link() -> Iterator[tuple[str, str, str]]:
    """(producer namespace, consumer namespace, consumer address)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("iproute2 (ip, tc) is not installed")
    tag = f"{os.getpid() % 10000}"
    ns_a, ns_b = f"mxr-a{tag}", f"mxr-b{tag}"
    subnet = 1 + os.getpid() % 250
    addr_a, addr_b = f"10.200.{subnet}.1", f"10.200.{subnet}.2"
    try:
        _ip("netns", "add", ns_a)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        _ip("netns", "add", ns_b)
        _ip("link", "add", f"va{tag}", "netns", ns_a, "type", "veth", "peer", "name", f"vb{tag}",
            "netns", ns_b)
        for ns, dev, addr in ((ns_a, f"va{tag}", addr_a), (ns_b, f"vb{tag}", addr_b)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            # tbf: RATE, 4 MB of queue (a deep bufferbloated queue, seconds long).
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                            "tbf", "rate", RATE, "burst", "32kbit", "limit", "4mb"],
                           check=True, capture_output=True)
        yield ns_a, ns_b, addr_b
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot set up the shaped link: {exc.stderr!r}")
    finally:
        subprocess.run(["ip", "netns", "del", ns_a], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns_b], check=False, capture_output=True)


async def _one_run(
    ns_a: str, ns_b: str, addr: str, port: int, producer_role: str = "producer",
) -> tuple[str, dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    consumer = await trio.lowlevel.open_process(
        ["ip", "netns", "exec", ns_b, sys.executable, str(PEER), "consumer", addr, str(port),
         str(TOTAL)], stdout=subprocess.PIPE, env=env)
    assert consumer.stdout is not None
    lines = b""
    try:
        while b"listening" not in lines:
            chunk = await consumer.stdout.receive_some()
            assert chunk, "the consumer exited before listening"
            lines += chunk
        producer = await trio.run_process(
            ["ip", "netns", "exec", ns_a, sys.executable, str(PEER), producer_role, addr,
             str(port), str(TOTAL)], capture_stdout=True, env=env)
        while chunk := await consumer.stdout.receive_some():
            lines += chunk
        await consumer.wait()
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await consumer.stdout.aclose()
    result = json.loads(lines.split(b"\n")[1])
    return producer.stdout.decode().strip(), result


@pytest.mark.parametrize("run", range(RUNS))
async def test_close_over_a_shaped_link_delivers_every_byte(
    shaped_link: tuple[str, str, str], run: int,
) -> None:
    ns_a, ns_b, addr = shaped_link
    with trio.fail_after(60 + TOTAL / 1e6 * 3):
        sent, result = await _one_run(ns_a, ns_b, addr, 7100 + run)
    assert result["error"] is None, result["error"]
    assert result["received"] == EXPECTED
    assert result["digest"] == sent


async def test_naive_close_over_the_shaped_link_loses_data(
    shaped_link: tuple[str, str, str],
) -> None:
    """The control: the same transfer, but the producer closes its socket where
    muxstream would send FIN and drain. It must truncate a transfer within
    NAIVE_TRIES runs, or the test above proves nothing on this link."""
    ns_a, ns_b, addr = shaped_link
    for attempt in range(NAIVE_TRIES):
        with trio.fail_after(60 + TOTAL / 1e6 * 3):
            sent, result = await _one_run(ns_a, ns_b, addr, 7200 + attempt, "naive-producer")
        if result["received"] != EXPECTED:
            assert result["error"] is not None, "truncated without an error"
            print(f"naive close: try {attempt + 1} lost data: {result}")
            return
        assert result["digest"] == sent
    pytest.fail(f"a naive close lost nothing in {NAIVE_TRIES} runs: the shaped test proves nothing")
