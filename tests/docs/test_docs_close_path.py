"""docs/close-path.md's map of the code stays true: every name it gives exists."""

from __future__ import annotations

import ast
import importlib
import inspect
import keyword
import re
from pathlib import Path

import pytest
import trio

import muxstream
from muxstream import _core, _session
from muxstream._core import Phase, Trigger

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "close-path.md"
#: The part of the page that maps the close path to functions.
SECTION_START = "### The close path in the code"
SECTION_END = "What this means for your code"
#: Where a bare name in the section may live.
NAMESPACES: tuple[object, ...] = (
    muxstream, _session, _core, muxstream.protocol, trio, muxstream.Session,
    muxstream.SessionOptions, muxstream.Stream, _core.SessionCore, muxstream.protocol.RstStatus,
)
#: Objects the page names by the session's attribute that holds them.
ATTRIBUTES: dict[str, object] = {"transport": trio.abc.Stream}


def _section() -> str:
    page = PAGE.read_text()
    start = page.index(SECTION_START)
    return page[start : page.index(SECTION_END, start)]


def _names() -> list[str]:
    """Each backticked name of the section, without a call's arguments."""
    return sorted({re.sub(r"\(.*\)$", "", n) for n in re.findall(r"`([^`\s]+)`", _section())})


def _instance_attributes(cls: type) -> set[str]:
    """What ``cls.__init__`` assigns to ``self``."""
    tree = ast.parse(inspect.getsource(cls))
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "self" and isinstance(node.ctx, ast.Store)}


def _has(owner: object, name: str) -> bool:
    return hasattr(owner, name) or (
        isinstance(owner, type) and name in _instance_attributes(owner))


def _resolves(name: str) -> bool:
    if name.endswith(".py"):
        path = name if name.startswith("muxstream/") else f"muxstream/{name}"
        return (ROOT / path).is_file()
    if "." not in name:
        return keyword.iskeyword(name) or name in Phase.__members__ or (
            name in Trigger.__members__) or any(_has(space, name) for space in NAMESPACES)
    owner_name, attr = name.rsplit(".", 1)
    if owner_name in ATTRIBUTES:
        owner: object = ATTRIBUTES[owner_name]
    elif owner_name.startswith("_"):  # a private module of the trio layer
        owner = importlib.import_module(f"muxstream.{owner_name}")
    else:  # a class of the trio layer or the protocol
        owner = next((getattr(m, owner_name) for m in
                      (*(importlib.import_module(f"muxstream.{s}") for s in
                         ("_session", "_core", "_stream", "_writer", "_reader", "_dispatch")),
                       muxstream.protocol)
                      if hasattr(m, owner_name)), None)
    return owner is not None and _has(owner, attr)


def test_every_name_the_close_path_page_gives_exists() -> None:
    names = _names()
    assert "Session._close" in names and "Session._drain" in names  # the table was read
    missing = [name for name in names if not _resolves(name)]
    assert missing == []


def test_the_check_sees_a_name_that_does_not_exist() -> None:
    # not vacuous: names of the old close path no longer resolve
    for stale in ("Session._graceful_close", "SessionCore._want_eof", "_session._spawn_close",
                  "_draining", "_reader._make_receiver"):
        assert not _resolves(stale), stale


def test_the_page_names_every_phase_and_every_trigger() -> None:
    names = set(_names())
    assert set(Phase.__members__) <= names
    assert set(Trigger.__members__) <= names


@pytest.mark.parametrize(
    ("name", "value"),
    [("close_timeout", muxstream.DEFAULT_CLOSE_TIMEOUT),
     ("TRANSPORT_CLOSE_GRACE", _session.TRANSPORT_CLOSE_GRACE),
     ("ERROR_FLUSH_GRACE", _session.ERROR_FLUSH_GRACE)],
)
def test_the_grace_periods_table_gives_the_defaults(name: str, value: float) -> None:
    row = re.search(rf"^\| `{name}`[^|]*\| ([\d.]+) s", _section(), re.MULTILINE)
    assert row is not None, f"no row for {name}"
    assert float(row.group(1)) == value


def test_the_evidence_the_page_cites_exists() -> None:
    page = PAGE.read_text()
    paths = set(re.findall(r"`(tests/[^`]+)`", page))
    tests = set(re.findall(r"`(test_\w+)`", page))
    assert paths and tests
    assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []
    source = "\n".join(p.read_text() for p in sorted((ROOT / "tests").rglob("test_*.py")))
    assert [t for t in sorted(tests) if f"def {t}(" not in source] == []
