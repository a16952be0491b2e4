"""One benchmark process: ``python -m benchmarks.worker '<json spec>'``.

The spec is ``{"peer": ..., "role": "server" | "client", "scenario": ..., "params": {...},
"port": N}`` (``port`` for clients only).  See ``benchmarks/_common.py`` for the JSON-lines
conversation with the orchestrator.  Any exception ends the process with a traceback on
stderr and a non-zero status, which the orchestrator reports as a crash.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import trio

from ._common import emit, serve_until_stdin_eof

#: peer name -> module under benchmarks.peers
PEER_MODULES = {
    "blocking": "blocking",
    "trio": "trio_raw",
    "h2": "h2_trio",
    "trio-websocket": "trio_ws",
    "muxstream": "mux",
}


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[1])
    module = importlib.import_module(f"benchmarks.peers.{PEER_MODULES[spec['peer']]}")
    params = spec.get("params", {})
    scenario = spec["scenario"]
    if hasattr(module, "SYNC_SCENARIOS"):
        sync_server, sync_client = module.SYNC_SCENARIOS[scenario]
        if spec["role"] == "server":
            sync_server(params)
        else:
            emit("result", **sync_client(spec["port"], params))
        return 0
    server, client = module.SCENARIOS[scenario]
    if spec["role"] == "server":

        async def serve(task_status: trio.TaskStatus[int]) -> None:
            await server(params, task_status)

        trio.run(serve_until_stdin_eof, serve)
    else:
        result = trio.run(client, spec["port"], params)
        emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
