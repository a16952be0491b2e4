"""An exec service whose "commands" are Python code you write: a calculator REPL.

Try it:

    python examples/custom_backend.py                      # serve + run a client, then exit
    export MUXSTREAM_TOKEN=$(openssl rand -hex 16)         # server and client
    python examples/custom_backend.py --serve --port 7071  # keep serving; then:
    echo '2 ** 10' | muxstream exec -a 127.0.0.1:7071 -i -- calc
    muxstream exec -a 127.0.0.1:7071 -it -- calc   # interactive: ^D or `exit` leaves

No process is started and nothing touches the filesystem: the backend
(`FunctionBackend`) hands each exec request to an async function with the
request's stdin/stdout/stderr as trio streams; its return value is the exit
code the client (muxstream, kubectl) sees. The calculator evaluates arithmetic
only, by walking the syntax tree (no eval): a sandbox by construction.
"""

from __future__ import annotations

import argparse
import ast
import operator
import os
import secrets
import sys
from collections.abc import Callable

import trio

from muxstream.remote import (
    ExecRequest,
    FunctionBackend,
    RemoteEndpoint,
    RemoteServerConfig,
    bound_port,
    run_remote,
    serve_remote,
)

Number = float | int
OPERATORS: dict[type[ast.AST], Callable[..., Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def calculate(text: str) -> float | int:
    """Evaluate +, -, *, /, //, %, ** on numbers; anything else is a ValueError."""

    def walk(node: ast.AST) -> float | int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 1000:
                raise ValueError("exponent too large")
            return OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](walk(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:40]}")

    return walk(ast.parse(text, mode="eval"))


async def calc(
    request: ExecRequest,
    stdin: trio.abc.ReceiveStream,
    stdout: trio.abc.SendStream,
    stderr: trio.abc.SendStream,
) -> int:
    """The `calc` command: one expression per line; exit 1 if any line failed."""
    if request.command[:1] != ("calc",):
        await stderr.send_all(b"only `calc` runs here\n")
        return 127
    if request.tty:
        return await calc_on_a_terminal(stdin, stdout)
    failures = 0
    pending = b""
    async for chunk in stdin:
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                answer, failed = evaluate(line.decode(errors="replace"))
                failures += failed
                await (stderr if failed else stdout).send_all(f"{answer}\n".encode())
    return 1 if failures else 0


def evaluate(line: str) -> tuple[str, bool]:
    """(the answer or the error, whether it failed)."""
    try:
        return str(calculate(line)), False
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError) as exc:
        return f"error: {exc}", True


async def calc_on_a_terminal(stdin: trio.abc.ReceiveStream, stdout: trio.abc.SendStream) -> int:
    """`exec -it -- calc`: the client's terminal is raw, so this side does what a
    terminal's line discipline would: echo what is typed, erase on Backspace,
    end a line on Enter (\\r), and leave on ^D (on an empty line), ^C or `exit`.
    Output lines end in \\r\\n, as on any raw terminal."""
    await stdout.send_all(b"calc: arithmetic, one expression per line; "
                          b"^D or `exit` leaves\r\ncalc> ")
    line = ""
    failures = 0
    async for chunk in stdin:
        for char in chunk.decode(errors="replace"):
            if char == "\x03":  # ^C
                await stdout.send_all(b"^C\r\n")
                return 130
            if char == "\x04" and not line:  # ^D on an empty line: end of input
                await stdout.send_all(b"\r\n")
                return 1 if failures else 0
            if char in "\x7f\b":
                if line:
                    line = line[:-1]
                    await stdout.send_all(b"\b \b")
            elif char in "\r\n":
                await stdout.send_all(b"\r\n")
                if line.strip() in ("exit", "quit"):
                    return 1 if failures else 0
                if line.strip():
                    answer, failed = evaluate(line)
                    failures += failed
                    await stdout.send_all(f"{answer}\r\n".encode())
                line = ""
                await stdout.send_all(b"calc> ")
            elif char.isprintable():
                line += char
                await stdout.send_all(char.encode())
    return 1 if failures else 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=os.environ.get("MUXSTREAM_TOKEN"),
                        help="the token (default: MUXSTREAM_TOKEN, else a random one)")
    args = parser.parse_args()
    args.token = args.token or secrets.token_urlsafe(24)
    async with FunctionBackend(calc) as backend:
        config = RemoteServerConfig(token=args.token, backend=backend)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_remote, config, args.port)
            port = bound_port(listeners)
            print(f"calculator exec service listening on 127.0.0.1:{port}", flush=True)
            if args.serve:
                await trio.sleep_forever()
            endpoint = RemoteEndpoint(f"http://127.0.0.1:{port}", token=args.token)
            result = await run_remote(
                endpoint, "demo", ["calc"], stdin=b"1 + 2\n2 ** 10\n7 / 0\n", check=False
            )
            print(f"stdout: {result.stdout!r}\nstderr: {result.stderr!r}\n"
                  f"exit code: {result.returncode}")
            nursery.cancel_scope.cancel()
    expected = (b"3\n1024\n", b"error: division by zero\n", 1)
    return 0 if (result.stdout, result.stderr, result.returncode) == expected else 1


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except* KeyboardInterrupt:  # Ctrl-C, possibly inside trio's exception groups
        pass
