"""The ``muxstream`` command (also ``python -m muxstream``). See docs/cli.md.

Every subcommand has ``--help`` with examples. Exit status: 0 success, 1 error,
the remote command's status for ``exec``/``attach``, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from .. import __version__
from .._accel import ACCELERATOR
from ._common import (
    DEFAULT_HOST,
    DEFAULT_POD,
    DEFAULT_PORT,
    ENV_ADDRESS,
    ENV_TOKEN,
    add_client_options,
    non_negative_float,
    parse_address,
    parse_size,
    positive_int,
    resolve_address,
    setup_logging,
)
from ._run import run_command

#: Exit status of a usage error (argparse's and the shell's convention), told apart
#: from 1, a failure of the command itself.
USAGE_ERROR = 2
#: kubectl's -v levels, 0 to 10.
VERBOSITY_LEVELS = 11

Handler = Callable[[argparse.Namespace], Awaitable[int]]

_DESCRIPTION = """\
muxstream: many bidirectional byte streams over one connection (SPDY/3.1,
spdystream- and kubectl-compatible), on trio.

Start a server in one terminal and use it from another:

  export MUXSTREAM_TOKEN=s3cret
  muxstream serve
  muxstream echo hello
  muxstream exec -- uname -a

Or run everything at once on loopback: muxstream demo
"""

_EXAMPLES = {
    "serve": """\
examples:
  muxstream serve                                # 127.0.0.1:7000, token from MUXSTREAM_TOKEN
  muxstream serve --token-file /etc/muxstream/token -a 0.0.0.0:7000 --cert srv.pem --key srv.key
  muxstream serve --allow uname --allow cat      # restrict exec
  muxstream serve --allow-cp                     # only cp (and kubectl cp)
  muxstream serve -a 10.0.0.2:7000 --insecure-no-tls   # behind a TLS proxy only
Beyond loopback, serve needs --cert/--key (or --insecure-no-tls) and a token.
Ctrl-C closes every session gracefully (GOAWAY, flush, FIN, drain).""",
    "echo": """\
examples:
  muxstream echo hello world
  muxstream echo --streams 16 "many streams, one connection"
  muxstream echo --transport websocket hi        # through /muxstream over WebSocket""",
    "ping": """\
examples:
  muxstream ping
  muxstream ping -c 100 -i 0.01 --json""",
    "exec": """\
examples:
  muxstream exec -- uname -a
  echo hello | muxstream exec -i -- tr a-z A-Z
  muxstream exec -it -- sh                       # interactive shell, raw terminal
  muxstream exec -- sh -c 'exit 3'; echo $?      # prints 3""",
    "attach": """\
examples:
  muxstream attach -i                            # talk to the server's attach process
  muxstream attach -it                           # with a terminal (serve --attach-tty)""",
    "cp": """\
examples:
  muxstream cp ./data.bin :/tmp/data.bin         # upload (pod "demo")
  muxstream cp demo:/tmp/data.bin ./copy.bin     # download
  muxstream cp ./dir :/tmp/                      # into an existing directory: /tmp/dir
  muxstream cp -c main ./data.bin default/demo:/tmp/   # kubectl's forms
  muxstream cp --resume ./big.iso :/tmp/big.iso  # run again after a cut to continue
Written to a temporary name beside the destination and renamed only after the
sha256 of every file matches; a failed copy removes it (--resume keeps it).""",
    "port-forward": """\
examples:
  muxstream port-forward 8080:8000               # local 8080 -> port 8000 on the server
  muxstream port-forward :8000                   # a free local port (printed)""",
    "bench": """\
examples:
  muxstream bench                                # spawns a local server, 256 MiB
  muxstream bench --size 1G --json
  muxstream bench -a 10.0.0.2:7000               # measures your server there
It says on stderr which server it measures.
The full benchmark suite lives in a checkout of the repository:
python benchmarks/run.py --quick (see docs/performance.md).""",
    "demo": """\
examples:
  muxstream demo                                 # 256 MiB
  muxstream demo --size 1G
  muxstream demo --size 16M --json""",
}


def _port_range(text: str) -> tuple[int, int]:
    from ..remote import PortRanges

    try:
        return PortRanges.parse_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit status 2, docs/cli.md)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        if hasattr(parsed, "address") and not hasattr(parsed, "address_source"):
            # -a, else MUXSTREAM_ADDRESS, else the default; where it came from is
            # kept for error messages (and bench: an address given means yours).
            try:
                resolve_address(parsed)
            except argparse.ArgumentTypeError as exc:
                self.error(str(exc))
        return parsed, rest

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser_for(
    sub: argparse._SubParsersAction[_Parser], name: str, help_text: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=_EXAMPLES.get(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(usage=parser)
    _add_verbosity(parser, default=argparse.SUPPRESS)
    return parser


class _Level(argparse.Action):
    """``-v=N`` / ``--v=N`` as kubectl users type them: verbosity N."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: object, option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, int((option_string or "=1").rpartition("=")[2]))


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=default,
        help="say more: -v shows the connection, TLS, upgrade and protocol chosen and "
             "tracebacks; -vv (or kubectl's -v=N, N >= 2) adds the library's debug log",
    )
    # kubectl's spelling, -v=6 or --v=6: exact option strings, so an `exec`
    # command's own arguments are never touched.
    parser.add_argument(
        *(f"{dash}v={n}" for dash in ("-", "--") for n in range(VERBOSITY_LEVELS)),
        action=_Level, nargs=0, dest="verbose", default=default, help=argparse.SUPPRESS,
    )


def build_parser() -> argparse.ArgumentParser:
    from ._copy import add_cp_arguments

    parser = _Parser(
        prog="muxstream",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(f"""\
            environment: {ENV_ADDRESS} (HOST:PORT, default {DEFAULT_HOST}:{DEFAULT_PORT}),
            {ENV_TOKEN} (the bearer token). Run `muxstream COMMAND --help` for examples."""),
    )
    parser.add_argument(
        "--version", action="version", version=f"muxstream {__version__} ({ACCELERATOR})"
    )
    _add_verbosity(parser, default=0)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    p = _parser_for(sub, "serve", "serve sessions, exec/attach/cp/port-forward and kubectl")
    p.add_argument(
        "-a", "--address", type=parse_address, default=None,
        help=f"listen on HOST:PORT (env {ENV_ADDRESS}; default {DEFAULT_HOST}:{DEFAULT_PORT}; "
             "port 0 picks one)",
    )
    p.add_argument("--token", default=None,
                   help=f"bearer token clients must present; visible to every local user "
                        f"on the command line: prefer env {ENV_TOKEN} or --token-file "
                        "(default: generate one and print it)")
    p.add_argument("--token-file", metavar="PATH",
                   help="read the token from PATH (its first line; not readable by others)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve without any token (loopback only: refused on other addresses)")
    p.add_argument("--insecure-no-tls", action="store_true",
                   help="allow serving beyond loopback without --cert/--key (tokens in clear "
                        "text: only behind a TLS-terminating proxy or a VPN)")
    p.add_argument("--cert", help="TLS certificate chain (PEM); with --key")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="let web pages from ORIGIN (scheme://host[:port]) use the server "
                        "(repeatable; requests with any other Origin header are refused)")
    p.add_argument("--allow", action="append", metavar="COMMAND",
                   help="allow only this argv[0] for exec (repeatable; not tar or find)")
    p.add_argument("--allow-cp", action="store_true",
                   help="under an allow-list (alone, or with --allow), also allow exactly "
                        "the commands `muxstream cp` and `kubectl cp` send")
    p.add_argument("--allow-port", action="append", type=_port_range, metavar="PORT[-PORT]",
                   help="allow port-forward only to these ports (repeatable; ranges "
                        "LOW-HIGH); with --allow and no --allow-port, port-forward is off")
    p.add_argument("--no-port-forward", action="store_true",
                   help="refuse every port-forward request")
    p.add_argument("--attach-command", default="cat", metavar="ARGV",
                   help="the process `attach` connects to (default: cat)")
    p.add_argument("--attach-tty", action="store_true", help="run the attach process on a pty")
    p.add_argument("--close-timeout", type=non_negative_float, default=10.0, metavar="SECONDS",
                   help="bound on each graceful close (default 10)")
    p.set_defaults(handler="serve")

    p = _parser_for(sub, "echo", "send text on one or more streams and check the echo")
    add_client_options(p)
    p.add_argument("message", nargs="*", help="text to send (default: hello, muxstream)")
    p.add_argument("-n", "--streams", type=positive_int, default=1,
                   help="concurrent streams (default 1)")
    p.add_argument("--transport", choices=["tcp", "upgrade", "websocket"], default="tcp")
    p.add_argument("--json", action="store_true", help="print a JSON result")
    p.set_defaults(handler="echo")

    p = _parser_for(sub, "ping", "measure the session's round-trip time (SPDY PING)")
    add_client_options(p)
    p.add_argument("-c", "--count", type=positive_int, default=10,
                   help="pings to send (default 10)")
    p.add_argument("-i", "--interval", type=non_negative_float, default=0.2,
                   help="seconds between pings (default 0.2)")
    p.add_argument("--transport", choices=["tcp", "upgrade", "websocket"], default="tcp")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(handler="ping")

    for name, text in (("exec", "run a command on the server"),
                       ("attach", "attach to the server's long-running process")):
        p = _parser_for(sub, name, text)
        add_client_options(p)
        p.add_argument("-i", "--stdin", action="store_true", help="send our stdin")
        p.add_argument("-t", "--tty", action="store_true",
                       help="allocate a terminal (raw mode, follows window size)")
        p.add_argument("--pod", default=DEFAULT_POD, help=f"pod name (default {DEFAULT_POD})")
        p.add_argument("-c", "--container", default=None, help="container name")
        p.add_argument("--transport", choices=["auto", "websocket", "spdy"], default="auto")
        if name == "exec":
            p.add_argument("command", nargs=argparse.REMAINDER, metavar="[POD] -- COMMAND",
                           help="the command and its arguments, after --; a word before "
                                "the -- names the pod, as with kubectl exec")
        else:
            p.add_argument("target", nargs="?", metavar="POD",
                           help="the pod, as with kubectl attach (default: --pod)")
        p.set_defaults(handler=name)

    p = _parser_for(sub, "cp", "copy files or directories to or from the server")
    add_client_options(p)
    add_cp_arguments(p, DEFAULT_POD)
    p.set_defaults(handler="cp")

    p = _parser_for(sub, "port-forward", "forward local ports to ports on the server")
    add_client_options(p)
    p.add_argument("ports", nargs="+", metavar="[POD] [LOCAL]:REMOTE",
                   help="port mappings; a first word that is not one names the pod, "
                        "as with kubectl port-forward")
    p.add_argument("--pod", default=DEFAULT_POD, help=f"pod name (default {DEFAULT_POD})")
    p.add_argument("--bind", default="127.0.0.1", help="local address (default 127.0.0.1)")
    p.add_argument("--transport", choices=["auto", "websocket", "spdy"], default="auto")
    p.add_argument("--json", action="store_true", help="print the bound ports as JSON lines")
    p.set_defaults(handler="port-forward")

    p = _parser_for(sub, "bench", "measure bulk throughput and ping under load")
    add_client_options(p)
    p.add_argument("--size", type=parse_size, default=parse_size("256M"),
                   help="bytes to send (default 256M)")
    p.add_argument("--no-spawn", dest="spawn", action="store_false", default=None,
                   help=f"measure the server at the default address too (with --address or "
                        f"{ENV_ADDRESS}, bench always measures that server)")
    p.add_argument("--json", action="store_true", help="print a JSON result")
    p.set_defaults(handler="bench")

    p = _parser_for(sub, "demo", "the self-contained loopback demo (server + client)")
    p.add_argument("--size", type=parse_size, default=parse_size("256M"),
                   help="bulk copy size (default 256M)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler="demo")

    from ._kube import add_kube_parser

    add_kube_parser(sub, _parser_for)
    return parser


def _handler(name: str) -> Handler:
    from . import _copy, _kube, _mux, _remote, _serve

    handlers: dict[str, Handler] = {
        "serve": _serve.serve_main,
        "echo": _mux.echo_main,
        "ping": _mux.ping_main,
        "bench": _mux.bench_main,
        "demo": _mux.demo_main,
        "exec": _remote.exec_main,
        "attach": _remote.attach_main,
        "cp": _copy.cp_main,
        "port-forward": _remote.port_forward_main,
        "kube": _kube.kube_main,
    }
    return handlers[name]


def pod_name(text: str) -> str:
    """``demo``, ``pod/demo`` or ``pods/demo`` -> ``demo`` (kubectl's TYPE/NAME form)."""
    kind, slash, name = text.rpartition("/")
    if slash and kind not in ("pod", "pods", "po"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: only pods can be addressed here (POD or pod/POD)"
        )
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r}: the pod name is empty")
    return name


def _kubectl_forms(args: argparse.Namespace) -> None:
    """Read the positional forms kubectl users type: ``exec POD -- CMD``,
    ``attach POD``, ``port-forward POD PORTS``; a bad one is a usage error."""
    parser: argparse.ArgumentParser = args.usage
    try:
        if args.handler == "exec":
            words = args.command
            if "--" in words:
                split = words.index("--")
                if split > 1:
                    parser.error(
                        f"one POD before --, not {' '.join(words[:split])!r} "
                        "(usage: muxstream exec [POD] -- COMMAND [ARGS...])"
                    )
                if split == 1:
                    args.pod = pod_name(words[0])
                args.command = words[split + 1:]
            if not args.command:
                parser.error("no command given (usage: muxstream exec [POD] -- COMMAND [ARGS...])")
        elif args.handler == "attach" and args.target:
            args.pod = pod_name(args.target)
        elif args.handler == "port-forward":
            from ._remote import parse_port_mapping

            words = list(args.ports)
            if len(words) > 1:
                try:
                    parse_port_mapping(words[0])
                except argparse.ArgumentTypeError:
                    args.pod = pod_name(words.pop(0))
            args.ports = [parse_port_mapping(word) for word in words]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``muxstream`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.subcommand:
        parser.print_help()
        return 1
    _kubectl_forms(args)
    setup_logging(args.verbose, args.subcommand)
    handler = _handler(args.handler)
    return run_command(
        args.handler, lambda: handler(args), verbose=bool(args.verbose), args=args,
        interruptible=args.handler != "serve",  # serve: its own graceful Ctrl-C
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
