"""Exec and copy into a pod of a real cluster, from Python, with your kubeconfig.

Try it (any cluster kubectl reaches; the container needs sh, cat and tar):

    pip install 'muxstream[kube]'
    python examples/cluster_exec.py mypod                  # current context
    python examples/cluster_exec.py --context prod -n web -c app mypod

It runs a command and collects its output and exit code, talks to an
interactive process over stdin/stdout, copies a file into the pod and back with
progress, and checks the round trip is byte-identical. Walkthrough:
docs/howto-cluster.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import trio

from muxstream import kube


async def main(args: argparse.Namespace) -> int:
    cluster = kube.load_cluster(args.kubeconfig, context=args.context, namespace=args.namespace)
    print(f"context {cluster.context}, namespace {cluster.namespace}, server {cluster.server}")

    # 1. Run a command to completion: output and exit code.
    result = await cluster.exec(args.pod, ["sh", "-c", "uname -s; exit 3"], container=args.c)
    print(f"exec: {result.stdout.decode().strip()!r}, exit code {result.returncode}")

    # 2. An interactive process: write to its stdin, read its stdout as it comes.
    async with cluster.open_process(args.pod, ["cat"], container=args.c, stdin=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.send_all(b"ping\n")
        echoed = await proc.stdout.receive_some()
        await proc.stdin.aclose()  # EOF: cat exits
        print(f"interactive: {echoed!r}, exit code {await proc.wait()}")

    # 3. Copy a file in and back out, with progress.
    with tempfile.TemporaryDirectory() as tmp:
        source, back = Path(tmp, "data.bin"), Path(tmp, "back.bin")
        source.write_bytes(os.urandom(args.size))
        remote = f"{args.remote_dir.rstrip('/')}/muxstream-example.bin"

        def progress(done: int, total: int | None) -> None:
            if total and done == total:
                print(f"copy_to: {done:,} of {total:,} bytes")

        await cluster.copy_to(args.pod, source, remote, container=args.c, progress=progress)
        await cluster.copy_from(args.pod, remote, back, container=args.c)
        await cluster.exec(args.pod, ["rm", "-f", remote], container=args.c, check=True)
        same = hashlib.sha256(source.read_bytes()).digest() == hashlib.sha256(
            back.read_bytes()
        ).digest()
        print(f"copy round trip: {'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pod")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("-n", "--namespace")
    parser.add_argument("-c", help="container")
    parser.add_argument("--size", type=int, default=1024 * 1024, help="bytes to copy")
    parser.add_argument("--remote-dir", default="/tmp", help="where the copy goes in the pod")
    try:
        sys.exit(trio.run(main, parser.parse_args()))
    except kube.KubeError as exc:  # kubeconfig problems: one line
        sys.exit(f"error: {exc}")
    except kube.ApiError as exc:  # the server refused: its reason and message
        sys.exit(f"error from server ({exc.reason or exc.status}): {exc.message}")
