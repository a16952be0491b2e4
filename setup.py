"""Build the optional compiled accelerator (everything else is in pyproject.toml).

``muxstream._speedups`` is plain CPython C API with no dependency. It is built
when a C compiler is present; without one the build warns and goes on
(``optional=True``), and muxstream runs its pure-Python twins of the same code.
``MUXSTREAM_NO_ACCEL=1`` at run time selects the pure-Python code even when the
extension is built (see docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "muxstream._speedups",
            sources=["muxstream/_csrc/speedups.c", "muxstream/_csrc/decoder.c"],
            depends=["muxstream/_csrc/speedups.h"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
