"""Sphinx configuration: Markdown pages (myst-parser) plus an API reference from docstrings.

Build (warnings are errors, as in the test tests/docs/test_docs_build.py):

    .venv/bin/python -m pip install -e ".[docs]"
    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "muxstream"
author = "the muxstream authors"
copyright = "2026, the muxstream authors"

from muxstream import __version__ as release  # noqa: E402

version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style "Args:/Returns:/Raises:" docstrings
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown: "#section" links resolve to headings (protocol.md's table of contents).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Type hints name things (trio.abc.Stream, ssl.SSLContext, ...) that are not
# all resolvable through intersphinx offline; unresolved names are not errors.
nitpicky = False

intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "alabaster"
html_title = f"muxstream {release}"
