"""Port-forward over SPDY and the WebSocket SPDY tunnel. Pending the session layer."""

from __future__ import annotations

import trio

from ._ws import WebSocket


async def serve_port_forward_spdy(stream: trio.abc.Stream, config: object) -> None:
    """Serve port-forward over an upgraded SPDY connection (not implemented yet)."""
    await stream.aclose()
    raise NotImplementedError("port-forward needs the session layer")


async def serve_port_forward_tunnel(websocket: WebSocket, config: object) -> None:
    """Serve port-forward over ``SPDY/3.1+portforward.k8s.io`` (not implemented yet)."""
    await websocket.stream.aclose()
    raise NotImplementedError("port-forward needs the session layer")
