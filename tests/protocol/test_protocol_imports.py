"""muxstream.protocol is sans-IO: nothing in it may import trio (or any I/O).

``import muxstream.protocol`` first runs ``muxstream/__init__.py``, which is the
trio layer and imports trio on purpose. So the probe below loads the protocol
package on its own in a fresh interpreter: a bare stand-in for the parent
package (no ``__init__`` code) lets ``muxstream.protocol`` import exactly what
its own modules import, and nothing else.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "muxstream" / "protocol"
BANNED = {"trio", "outcome", "sniffio", "socket", "selectors", "asyncio", "ssl", "h11", "wsproto"}

PROBE = """
    import sys, types
    parent = types.ModuleType("muxstream")
    parent.__path__ = [{package_dir!r}]
    {install}
    import muxstream.protocol
    from muxstream.protocol import Connection, Role
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {banned!r})
    print(",".join(loaded))
"""


def probe(*, install_stub: bool) -> str:
    code = PROBE.format(
        package_dir=str(ROOT / "muxstream"),
        install="sys.modules['muxstream'] = parent" if install_stub else "",
        banned=BANNED,
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_protocol_package_imports_no_trio_and_no_io() -> None:
    assert probe(install_stub=True) == ""


def test_the_probe_can_see_trio() -> None:
    # Through the real package root (the trio layer) the same probe finds trio:
    # the check above is not vacuous.
    assert "trio" in probe(install_stub=False).split(",")


def test_protocol_sources_import_only_the_standard_library_and_each_other() -> None:
    allowed = {"__future__", "enum", "struct", "zlib", "dataclasses", "collections", "typing"}
    for path in sorted(PROTOCOL.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the protocol package
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
