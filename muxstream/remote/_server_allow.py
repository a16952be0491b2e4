"""Argument-aware allow rules: the exact argv shapes a copy needs, nothing more.

An allow-list of program names cannot serve ``cp``: cp needs ``tar``, and tar
runs arbitrary commands through its own options (``--to-command``, ``-I``,
``--use-compress-program``, ``--checkpoint-action=exec=``, ``--rsh-command``);
``find`` has ``-exec``. So with ``allow_copy`` the server admits those programs
only in the shapes below: the ones ``muxstream cp`` sends (see ``_copy``) and the
ones a stock ``kubectl cp`` (v1.32) sends. Each shape is a fixed sequence of
tokens; a placeholder stands for one client-chosen operand and says what that
operand may look like. No shape lets an operand be read as an option: operands
never start with ``-`` (and our own shapes put ``--`` before them as well).

What the shapes still allow is what a copy means: reading every file and
writing every path the server's user can (docs/security.md, docs/cli.md
"Copy under an allow-list").
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Collection, Sequence

#: A client-chosen operand: a path (never an option), a byte offset, a mode.
Operand = Callable[[str], bool]


def _path(token: str) -> bool:
    return bool(token) and not token.startswith("-") and "\0" not in token


def _rooted_path(token: str) -> bool:
    # find reads an operand starting with "(", "!" or "," as an expression.
    return _path(token) and token.startswith(("/", "."))


#: The basename of every temporary file or directory a copy writes (``_copy.temp_name``).
TEMP_NAME = re.compile(r"\..+\.muxstream-[0-9a-z]{1,16}\.part")


def _temp_path(token: str) -> bool:
    return _path(token) and TEMP_NAME.fullmatch(posixpath.basename(token)) is not None


def _temp_contents(token: str) -> bool:
    return token.endswith("/.") and _temp_path(token[:-2])


def _offset(token: str) -> bool:
    return re.fullmatch(r"\+[0-9]{1,19}", token) is not None


def _mode(token: str) -> bool:
    # Permission bits only: no set-uid, set-gid or sticky bit.
    return re.fullmatch(r"0?[0-7]{3}", token) is not None


PATH: Operand = _path
ROOTED_PATH: Operand = _rooted_path
TEMP: Operand = _temp_path
TEMP_CONTENTS: Operand = _temp_contents
OFFSET: Operand = _offset
MODE: Operand = _mode

Shape = tuple[str | Operand, ...]

#: What ``muxstream cp`` runs remotely (``_copy``): probes, transfers, the final rename.
MUXSTREAM_COPY_SHAPES: tuple[Shape, ...] = (
    ("ls", "-d", "-L", "-l", "-n", "--", PATH),  # type, size and mode of a path
    ("sha256sum", "--", PATH),  # the digest of one file
    ("find", ROOTED_PATH, "-type", "f", "-exec", "sha256sum", "{}", "+"),  # of a tree
    ("tail", "-c", OFFSET, "--", PATH),  # download a file from a byte offset
    ("tee", "--", TEMP),  # upload a file to its temporary name
    ("tee", "-a", "--", TEMP),  # resume that upload
    ("chmod", MODE, "--", TEMP),  # the local file's permission bits
    ("mv", "-f", "--", TEMP, PATH),  # verified: rename into place
    ("cp", "-R", "-p", "--", TEMP_CONTENTS, PATH),  # verified tree merged into a directory
    ("rm", "-f", "--", TEMP),  # a failed upload's temporary file
    ("rm", "-r", "-f", "--", TEMP),  # a failed or merged tree
    ("tar", "-xmf", "-", "-C", PATH),  # upload a tree (also kubectl's)
    ("tar", "cf", "-", "-C", PATH, PATH),  # download a tree
)

#: What a stock ``kubectl cp`` v1.32 runs (kubectl/pkg/cmd/cp/cp.go). Not its
#: ``--retries`` form, ``sh -c "tar cf - PATH | tail -c+N"``: that is a shell.
KUBECTL_COPY_SHAPES: tuple[Shape, ...] = (
    ("test", "-d", PATH),
    ("tar", "-xmf", "-"),
    ("tar", "-xmf", "-", "-C", PATH),
    ("tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-"),
    ("tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", PATH),
    ("tar", "cf", "-", PATH),
)

COPY_SHAPES: tuple[Shape, ...] = MUXSTREAM_COPY_SHAPES + KUBECTL_COPY_SHAPES

#: Programs that run other programs through their own options or operands:
#: naming one in an allow-list would allow everything, so it is refused there.
#: cp's uses of tar and find go through ``allow_copy`` instead.
COMMAND_RUNNERS = frozenset({"tar", "find"})


def matches(argv: Sequence[str], shape: Shape) -> bool:
    """Whether ``argv`` is exactly ``shape`` (same length, every token accepted)."""
    if len(argv) != len(shape):
        return False
    for token, expected in zip(argv, shape, strict=True):
        if isinstance(expected, str):
            if token != expected:
                return False
        elif not expected(token):
            return False
    return True


def is_copy_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is one of the shapes muxstream cp or kubectl cp send."""
    return any(matches(argv, shape) for shape in COPY_SHAPES)


def command_refusal(
    argv: Sequence[str], allowed_commands: Collection[str] | None, *, allow_copy: bool
) -> str | None:
    """Why ``argv`` is refused under this policy, or None if it may run.

    ``allowed_commands`` None means no allow-list (everything runs). Otherwise
    ``argv`` runs if ``argv[0]`` is listed (any arguments), or if
    ``allow_copy`` and ``argv`` is one of the copy shapes.
    """
    if allowed_commands is None:
        return None
    if not argv:
        return "empty command"
    if allow_copy and is_copy_command(argv):
        return None
    if argv[0] in allowed_commands:
        return None
    if allow_copy and any(shape[0] == argv[0] for shape in COPY_SHAPES):
        return (
            f"command {argv[0]!r} is allowed only with the arguments a copy sends, "
            "and these are not such"
        )
    return f"command {argv[0]!r} is not allowed"


def allow_list_problem(allowed_commands: Collection[str] | None) -> str | None:
    """Why this allow-list would not restrict anything it seems to, or None."""
    if allowed_commands is None:
        return None
    runners = sorted(COMMAND_RUNNERS.intersection(allowed_commands))
    if runners:
        return (
            f"{' and '.join(runners)} cannot be on an allow-list: its own options run "
            "other commands (tar --to-command, -I, --checkpoint-action; find -exec)"
        )
    return None
