"""``muxstream cp``: kubectl's grammar, muxstream's verified copy (docs/cli.md).

``[[NAMESPACE/]POD]:PATH`` is on the server (``:PATH`` is the default pod), any
other argument is local; ``-c CONTAINER`` picks the container. The copy itself
is :func:`muxstream.remote.copy_to_remote` / ``copy_from_remote``: into an
existing directory, through a temporary name, SHA-256 checked, ``--resume``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..remote import CopyResult, copy_from_remote, copy_to_remote
from ._common import INTERRUPT, CliError, Progress, emit_json
from ._explain import describe, root_error
from ._remote import make_endpoint


@dataclass(frozen=True)
class RemoteSpec:
    """A ``[[NAMESPACE/]POD]:PATH`` argument."""

    pod: str
    path: str
    namespace: str | None = None


def split_remote(spec: str, default_pod: str) -> RemoteSpec | None:
    """``[NS/]POD:PATH`` or ``:PATH`` -> RemoteSpec; a local path -> None.

    Like kubectl: no colon means local; and, as before, a path that starts with
    ``/`` or ``.`` is local even with a colon in it.
    """
    if spec.startswith(("/", ".")) or ":" not in spec:
        return None
    pod, _, path = spec.partition(":")
    if not path:
        raise CliError(f"{spec!r}: the remote path is empty")
    namespace, slash, name = pod.rpartition("/")
    if slash and (not namespace or not name or "/" in namespace):
        raise CliError(f"{spec!r}: expected [NAMESPACE/]POD:PATH")
    return RemoteSpec(name or default_pod, path, namespace or None)


def add_cp_arguments(parser: argparse.ArgumentParser, default_pod: str) -> None:
    parser.add_argument("source", help="local path, or [[NAMESPACE/]POD]:PATH on the server")
    parser.add_argument("dest", help="local path, or [[NAMESPACE/]POD]:PATH on the server")
    parser.add_argument(
        "--pod", default=default_pod, help=f"pod for :PATH (default {default_pod})"
    )
    parser.add_argument("-c", "--container", default=None, help="container name")
    parser.add_argument("--no-verify", action="store_true", help="skip the SHA-256 comparison")
    parser.add_argument(
        "--resume", action="store_true",
        help="keep a partial copy when interrupted, and continue one (one file)",
    )
    parser.add_argument("--transport", choices=["auto", "websocket", "spdy"], default="auto")
    parser.add_argument("--json", action="store_true", help="print a JSON result")


def _notes(exc: BaseException) -> list[str]:
    """The notes on ``exc`` and on every exception grouped in it, in order, once."""
    notes = list(getattr(exc, "__notes__", ()))
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            notes.extend(_notes(inner))
    return list(dict.fromkeys(notes))


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[None]:
    """End the progress line, and say what became of the temporary file of a
    failed copy: in the error line, or after an interruption (Ctrl-C) on lines
    of its own."""
    try:
        yield
    except BaseException as exc:
        progress.finish()
        notes, root = _notes(exc), root_error(exc)
        text = describe(root) if isinstance(root, Exception) else None
        if notes and text is not None:
            raise CliError("; ".join([text, *notes])) from exc
        for note in notes if text is None else ():
            print(f"muxstream cp: {note}", file=sys.stderr, flush=True)
        raise
    progress.finish()


def report(result: CopyResult, direction: str, *, json: bool) -> None:
    """The JSON document (``--json``), or a summary line on a terminal."""
    if json:
        emit_json({"copied": direction, "destination": result.destination,
                   "bytes": result.transferred, "size": result.size, "files": result.files,
                   "resumed_from": result.resumed_from, "digest_verified": result.verified})
    elif os.isatty(2):
        status = "sha256 verified" if result.verified else "not verified"
        resumed = f", resumed at {result.resumed_from:,}" if result.resumed_from else ""
        print(f"{direction}: {result.size:,} bytes{resumed}, {result.files} file(s), {status}",
              file=sys.stderr)


async def cp_main(args: argparse.Namespace) -> int:
    source, destination = split_remote(args.source, args.pod), split_remote(args.dest, args.pod)
    if (source is None) == (destination is None):
        raise CliError("exactly one of SOURCE and DEST must be remote ([POD]:PATH)")
    remote = destination or source
    assert remote is not None
    endpoint = make_endpoint(args)
    if remote.namespace:
        endpoint = dataclasses.replace(endpoint, namespace=remote.namespace)
    progress = Progress("cp", None, mode="quiet")
    verify, resume = not args.no_verify, args.resume
    INTERRUPT.waiting_for = (
        "keeping the partial copy for --resume" if resume
        else "stopping the copy and removing its temporary file"
    )
    with reporting(progress):
        if destination is not None:
            local = Path(args.source)
            result = await copy_to_remote(
                endpoint, remote.pod, local, remote.path, container=args.container,
                progress=progress.update, verify=verify, resume=resume,
            )
            direction = f"{local} -> {remote.pod}:{result.destination}"
        else:
            result = await copy_from_remote(
                endpoint, remote.pod, remote.path, args.dest, container=args.container,
                progress=progress.update, verify=verify, resume=resume,
            )
            direction = f"{remote.pod}:{remote.path} -> {result.destination}"
    report(result, direction, json=args.json)
    return 0
