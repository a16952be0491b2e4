"""Which implementation of the hot paths runs: the compiled accelerator or pure Python.

``muxstream._speedups`` is an optional C extension (built from ``muxstream/_csrc``
when the package is installed from source with a C compiler present). It has
compiled twins of the SPDY frame decoder and of WebSocket masking and framing;
the pure-Python code stays the reference and the fallback, and both behave the
same byte for byte. Set ``MUXSTREAM_NO_ACCEL=1`` (before muxstream is imported)
to run the pure-Python code even when the extension is built.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["ACCELERATED", "ACCELERATOR", "NO_ACCEL_ENV", "speedups"]

#: Environment variable that, set to anything but "" or "0", forces pure Python.
NO_ACCEL_ENV = "MUXSTREAM_NO_ACCEL"


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(NO_ACCEL_ENV, "").strip() not in ("", "0"):
        return None, f"pure Python: {NO_ACCEL_ENV} is set"
    try:
        from . import _speedups
    except ImportError:
        return None, "pure Python: the compiled accelerator is not built"
    return _speedups, "compiled C accelerator"


speedups, ACCELERATOR = _load()
#: True when the compiled accelerator is in use.
ACCELERATED: bool = speedups is not None
