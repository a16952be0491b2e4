"""Unwrap single-exception groups at the public API boundary.

Trio nurseries wrap everything in ``ExceptionGroup``; a user of
``open_remote_process`` or ``copy_to_remote`` should see the one
``trio.BrokenResourceError`` (or their own exception) that actually happened.
Several BrokenResourceErrors (one broken connection seen by several tasks)
count as one. Groups with distinct exceptions are left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves = _leaves(group)
    if len(leaves) == 1:
        return leaves[0]
    # One broken connection seen by several tasks (stdout and stderr readers...)
    # is still one failure: report the first.
    if all(isinstance(leaf, trio.BrokenResourceError) for leaf in leaves):
        return leaves[0]
    return None


@contextlib.contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise the only leaf of a (nested) single-exception group, cause intact."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner = _single(group)
        if inner is None:
            raise
        raise inner from inner.__cause__
