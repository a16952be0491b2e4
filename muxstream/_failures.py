"""Failure plumbing shared by every layer above the protocol.

* :data:`GONE`: the two trio errors that mean "the other end (or this end) is
  no longer there": the peer or the connection broke
  (``trio.BrokenResourceError``), or this side closed the resource
  (``trio.ClosedResourceError``). Copy loops and clean-ups that must end
  quietly when a connection goes away catch exactly these.
* :func:`leaves` and :func:`collapse_groups`: trio nurseries wrap everything
  in ``ExceptionGroup``; a user of ``open_remote_process`` or
  ``copy_to_remote`` should see the one ``trio.BrokenResourceError`` (or their
  own exception) that actually happened, and the CLI explains the first real
  failure of a group.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import ParamSpec, TypeVar

import trio

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: A connection or stream that went away (broken by the peer, or closed here).
GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, depth first: itself unless it is a group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    found = leaves(group)
    if len(found) == 1:
        return found[0]
    # One broken connection seen by several tasks (stdout and stderr readers...)
    # is still one failure: report the first.
    if all(isinstance(leaf, trio.BrokenResourceError) for leaf in found):
        return found[0]
    return None


@contextlib.contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise the only leaf of a (nested) single-exception group, cause intact.

    Several ``trio.BrokenResourceError`` (one broken connection seen by several
    tasks) count as one, the first; a group of distinct exceptions is left alone.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner = _single(group)
        if inner is None:
            raise
        raise inner from inner.__cause__


def collapsing_groups(
    open_: Callable[_P, AbstractAsyncContextManager[_T]],
) -> Callable[_P, AbstractAsyncContextManager[_T]]:
    """Decorate an ``open_*`` async context manager factory: what leaves its
    ``async with`` (from its own tasks or from the caller's block) comes out
    through :func:`collapse_groups`."""

    @functools.wraps(open_)
    @asynccontextmanager
    async def collapsed(*args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
        with collapse_groups():
            async with open_(*args, **kwargs) as value:
                yield value

    return collapsed
