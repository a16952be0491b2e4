"""Running one ``muxstream`` command: exit statuses, the one-line error, Ctrl-C.

:func:`run_command` runs a subcommand under trio and maps its failure to an
exit status and one line on stderr (``_explain`` words it); the first Ctrl-C
says what the command still does before it stops, a second one leaves at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType

import trio

from ._common import INTERRUPT, Interrupted
from ._explain import describe, root_error

logger = logging.getLogger("muxstream.cli")


async def run_interruptible(name: str, main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main``; the first Ctrl-C says what remains to do and interrupts it as
    trio does (``KeyboardInterrupt``, so clean-up code runs: closing connections,
    removing a copy's temporary file), a second one leaves at once
    (``os._exit(130)`` after ``on_hard_exit``).

    Raises :class:`Interrupted` once ``main`` ended after a first Ctrl-C. A
    command that handles SIGINT itself (port-forward, serve) opens its own
    receiver inside, which takes precedence while it is open.
    """
    trio_handler = signal.getsignal(signal.SIGINT)
    presses = 0

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        presses += 1
        INTERRUPT.end_lines()
        if presses == 1:
            print(f"muxstream {name}: interrupted: {INTERRUPT.waiting_for}; "
                  "press Ctrl-C again to stop at once", file=sys.stderr, flush=True)
            if callable(trio_handler):
                trio_handler(signum, frame)  # trio raises KeyboardInterrupt where it is safe
            return
        for undo in INTERRUPT.on_hard_exit:
            with contextlib.suppress(Exception):
                undo()
        print(f"muxstream {name}: stopped at once", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        return await main()
    except BaseException:
        if presses:
            raise Interrupted from None
        raise
    finally:
        signal.signal(signal.SIGINT, trio_handler)


def run_command(
    name: str,
    main: Callable[[], Awaitable[int]],
    *,
    verbose: bool,
    args: argparse.Namespace | None = None,
    interruptible: bool = True,
) -> int:
    """Run ``main`` under trio; map its failures to an exit status and one line
    (``args`` lets the line name what the user gave: see ``_explain``).
    ``interruptible``: Ctrl-C as :func:`run_interruptible` (else trio's own)."""
    try:
        if interruptible:
            return trio.run(run_interruptible, name, main)
        return trio.run(main)
    except Interrupted:
        return 130
    except KeyboardInterrupt:
        print(f"muxstream {name}: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        root = root_error(exc)
        if isinstance(root, Interrupted):
            return 130
        if isinstance(root, KeyboardInterrupt):
            print(f"muxstream {name}: interrupted", file=sys.stderr)
            return 130
        line = describe(root, args)
        if line is None or verbose:
            logger.debug("failure", exc_info=exc)
        if line is None:
            line = f"internal error: {type(root).__name__}: {root}"
            if not verbose:
                line += " (run with -v for the traceback)"
        print(f"muxstream {name}: error: {line}", file=sys.stderr)
        return 1
