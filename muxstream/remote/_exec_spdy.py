"""exec/attach over SPDY (HTTP upgrade + muxstream session). Pending the session layer."""

from __future__ import annotations

import trio

from ._backend import ExecBackend, ExecRequest


async def serve_exec_spdy(
    stream: trio.abc.Stream,
    protocol: str,
    request: ExecRequest,
    backend: ExecBackend,
    config: object,
) -> None:
    """Serve one exec over an upgraded SPDY connection (not implemented yet)."""
    await stream.aclose()
    raise NotImplementedError("exec over SPDY needs the session layer")
