"""``muxstream kube``: exec, attach, cp and port-forward into a real cluster, kubectl's grammar.

The cluster comes from the kubeconfig as kubectl reads it (:mod:`muxstream.kube`):
``--kubeconfig``, ``--context``, ``-n``. Exit codes follow kubectl: the remote
command's code for exec/attach, 1 for any error (one line on stderr), 0 for
cp and for a port-forward ended by Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from ..kube import ApiError, Cluster, KubeError, default_container, load_cluster
from ._common import CliError, Progress
from ._copy import report, reporting
from ._remote import drive, parse_port_mapping, raw_terminal
from ._remote import serve_ports as _serve_ports

_EXAMPLES = {
    "exec": """\
examples:
  muxstream kube exec mypod -- ls /
  echo hi | muxstream kube exec -i -n web -c app mypod -- tr a-z A-Z
  muxstream kube exec -it mypod -- sh
  muxstream kube --context prod exec pod/mypod -- sh -c 'exit 3'; echo $?   # 3""",
    "attach": """\
examples:
  muxstream kube attach -it mypod -c app""",
    "cp": """\
examples:
  muxstream kube cp ./data.bin mypod:/tmp/data.bin
  muxstream kube cp -c app web/mypod:/var/log ./logs
Into an existing directory, as kubectl; written to a temporary name and renamed
after the sha256 check (--no-verify skips it); --resume continues a cut copy.""",
    "port-forward": """\
examples:
  muxstream kube port-forward mypod 8080:80
  muxstream kube port-forward -n web pod/mypod :5432 9000""",
}


def _add_common_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The cluster flags; kubectl takes them before or after the subcommand.

    They are on ``kube`` (with defaults) and on each subcommand (without: a
    subparser's defaults would overwrite what was given before the subcommand).
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("cluster (as kubectl)")
    group.add_argument("--kubeconfig", metavar="FILE", default=default(None),
                       help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
    group.add_argument("--context", default=default(None),
                       help="kubeconfig context (default: current-context)")
    group.add_argument("-n", "--namespace", default=default(None),
                       help="namespace (default: the context's)")
    group.add_argument("--transport", choices=["auto", "websocket", "spdy"],
                       default=default("auto"),
                       help="auto: WebSocket v5, then SPDY (as kubectl 1.30+)")
    group.add_argument("--request-timeout", type=float, default=default(30.0), metavar="SECONDS",
                       help="connect + TLS timeout per request (default 30)")


def _common_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    _add_common_flags(flags, defaults=False)
    return flags


def _exec_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-i", "--stdin", action="store_true", help="send our stdin")
    flags.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    flags.add_argument("-c", "--container", help="container name (default: the server's)")
    return flags


def add_kube_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    parser_for: Callable[..., argparse.ArgumentParser],
) -> None:
    """Register ``muxstream kube ...`` (called by the CLI's parser builder)."""
    kube = parser_for(sub, "kube", "exec, attach, cp, port-forward into a Kubernetes cluster")
    _add_common_flags(kube, defaults=True)
    commands = kube.add_subparsers(dest="kube_command", metavar="COMMAND", required=True)
    common, exec_flags = _common_flags(), _exec_flags()

    def command(name: str, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p = commands.add_parser(
            name, help=text, description=text, epilog=_EXAMPLES[name],
            parents=[common, *parents], formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
        return p

    p = command("exec", "run a command in a container (kubectl exec)", exec_flags)
    p.add_argument("pod", metavar="POD", help="pod name (or pod/NAME)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    p = command("attach", "attach to a container's main process (kubectl attach)", exec_flags)
    p.add_argument("pod", metavar="POD", help="pod name (or pod/NAME)")
    p = command("cp", "copy files to or from a container (kubectl cp)")
    p.add_argument("-c", "--container", help="container name")
    p.add_argument("source", metavar="SRC", help="LOCAL or [NS/]POD:PATH")
    p.add_argument("dest", metavar="DEST", help="LOCAL or [NS/]POD:PATH")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 comparison")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted --resume copy of a file where it stopped")
    p.add_argument("--json", action="store_true", help="print a JSON result")
    p = command("port-forward", "forward local ports to a pod (kubectl port-forward)")
    p.add_argument("pod", metavar="POD", help="pod name (or pod/NAME)")
    p.add_argument("ports", nargs="+", type=parse_port_mapping, metavar="[LOCAL:]REMOTE")
    p.add_argument("--address", default="127.0.0.1", help="local address (default 127.0.0.1)")
    p.add_argument("--json", action="store_true", help="print the bound ports as JSON lines")
    kube.set_defaults(handler="kube")


def _pod(name: str) -> str:
    kind, sep, rest = name.partition("/")
    if not sep:
        return name
    if kind not in ("pod", "pods", "po") or not rest:
        raise CliError(f"{name!r}: only pods are supported (POD or pod/NAME)")
    return rest


def _cluster(args: argparse.Namespace) -> Cluster:
    return load_cluster(
        args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        transport=args.transport,
        connect_timeout=args.request_timeout,
    )


async def _container(cluster: Cluster, pod: str, args: argparse.Namespace,
                     namespace: str | None = None) -> str:
    """``-c``, else the pod's default container, announced as kubectl does."""
    if args.container:
        return str(args.container)
    chosen = default_container(await cluster.get_pod(pod, namespace=namespace))
    if len(chosen.names) > 1 and not chosen.annotated:
        names = ", ".join(chosen.names)
        print(f'Defaulted container "{chosen.name}" out of: {names}', file=sys.stderr)
    return chosen.name


async def _exec(args: argparse.Namespace) -> int:
    command: list[str] = args.command
    if command[:1] == ["--"]:
        command = command[1:]
    elif command[:1] and command[0].startswith("-") and "--" in command:
        # Flags given after POD (kubectl allows them) come before the `--`.
        cut = command.index("--")
        late = argparse.ArgumentParser(
            prog="muxstream kube exec", add_help=False, parents=[_common_flags(), _exec_flags()]
        )
        late.add_argument("-v", "--verbose", action="count", default=0)
        late.parse_args(command[:cut], namespace=args)
        command = command[cut + 1 :]
    if not command:
        raise CliError("you must specify at least one command for the container "
                       "(muxstream kube exec POD -- COMMAND [ARGS...])")
    return await _interactive(args, command)


async def _interactive(args: argparse.Namespace, command: list[str] | None) -> int:
    cluster = _cluster(args)
    use_tty = args.tty and os.isatty(0)
    if args.tty and not use_tty:
        print("Unable to use a TTY - input is not a terminal or the right kind of file",
              file=sys.stderr)
    pod = _pod(args.pod)
    container = await _container(cluster, pod, args)
    stdin = bool(args.stdin or use_tty)
    with raw_terminal(use_tty):
        if command is None:
            async with cluster.attach(
                pod, container=container, stdin=stdin, tty=use_tty
            ) as process:
                return await drive(process, use_tty)
        async with cluster.open_process(
            pod, command, container=container, stdin=stdin, tty=use_tty
        ) as process:
            return await drive(process, use_tty)


def split_pod_path(spec: str) -> tuple[str | None, str, str] | None:
    """``[NS/]POD:PATH`` -> (namespace or None, pod, path); a local path -> None.

    As kubectl: a spec without ``:``, or starting with ``/`` or ``.``, is local.
    """
    if spec.startswith(("/", ".")) or ":" not in spec:
        return None
    target, _, path = spec.partition(":")
    if not path or not target:
        raise CliError(f"{spec!r}: expected [NAMESPACE/]POD:PATH")
    namespace, sep, pod = target.rpartition("/")
    return (namespace if sep else None), pod, path


async def _cp(args: argparse.Namespace) -> int:
    source, destination = split_pod_path(args.source), split_pod_path(args.dest)
    if (source is None) == (destination is None):
        raise CliError("one of SRC and DEST must be local and the other [NS/]POD:PATH")
    cluster = _cluster(args)
    progress = Progress("cp", None, mode="quiet")
    verify, resume = not args.no_verify, args.resume
    with reporting(progress):
        if destination is not None:
            namespace, pod, remote_path = destination
            container = await _container(cluster, pod, args, namespace)
            result = await cluster.copy_to(
                pod, Path(args.source), remote_path, container=container, namespace=namespace,
                progress=progress.update, verify=verify, resume=resume,
            )
            direction = f"{args.source} -> {pod}:{result.destination}"
        else:
            assert source is not None
            namespace, pod, remote_path = source
            container = await _container(cluster, pod, args, namespace)
            result = await cluster.copy_from(
                pod, remote_path, args.dest, container=container, namespace=namespace,
                progress=progress.update, verify=verify, resume=resume,
            )
            direction = f"{pod}:{remote_path} -> {result.destination}"
    report(result, direction, json=args.json)
    return 0


async def _port_forward(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with cluster.open_port_forward(_pod(args.pod)) as forwarder:
            await _serve_ports(forwarder, args.ports, args.address, args.json, signals)
    return 0


async def kube_main(args: argparse.Namespace) -> int:
    """Run one ``muxstream kube`` command; kube errors become one-line CLI errors."""
    try:
        if args.kube_command == "exec":
            return await _exec(args)
        if args.kube_command == "attach":
            return await _interactive(args, None)
        if args.kube_command == "cp":
            return await _cp(args)
        return await _port_forward(args)
    except ApiError as exc:
        reason = f" ({exc.reason})" if exc.reason else ""
        raise CliError(f"Error from server{reason}: {exc.message}") from exc
    except KubeError as exc:
        raise CliError(str(exc)) from exc
