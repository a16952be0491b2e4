"""Every `muxstream ...` command line in the docs and in --help parses as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from muxstream._cli import _EXAMPLES, build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = sorted((ROOT / "docs").glob("*.md"))


def command_lines() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in DOC_FILES:
        for line in path.read_text().splitlines():
            if line.startswith("$ ") and re.search(
                r"(?:^\$ |[;|&] )(?:\S+=\S+ )*(?:\S*/)?muxstream [a-z]", line
            ):
                found.append((path.name, line[2:]))
    for name, text in _EXAMPLES.items():
        for line in text.splitlines():
            if line.strip().startswith("muxstream "):
                found.append((f"--help of {name}", line.split("  #")[0].strip()))
    return found


def argv_of(line: str) -> list[str]:
    """The muxstream arguments of a shell line (env prefixes, pipes and `;` dropped)."""
    words = shlex.split(line, comments=True)
    start = next(i for i, w in enumerate(words) if w == "muxstream" or w.endswith("/muxstream"))
    start += 1
    argv: list[str] = []
    for word in words[start:]:
        if word in ("|", "&&", ";", "&") or word.endswith(";"):
            if word.endswith(";") and word != ";":
                argv.append(word[:-1])
            break
        argv.append(word)
    return argv


LINES = command_lines()


def test_the_docs_show_every_command() -> None:
    shown = {argv_of(line)[0] for _, line in LINES}
    assert shown >= set(_EXAMPLES)


@pytest.mark.parametrize(("where", "line"), LINES, ids=[f"{w}: {c}" for w, c in LINES])
def test_documented_command_parses(where: str, line: str) -> None:
    args = build_parser().parse_args(argv_of(line))
    assert args.subcommand
