"""Plain API reads (``GET`` a pod) and kubectl's choice of the default container.

kubectl reads the pod before every exec/attach/cp: to pick the container when
none was named (the ``kubectl.kubernetes.io/default-container`` annotation if
it names one of the pod's containers, else the first container), and to refuse
a pod that has completed. The API server itself refuses a pod with several
containers when the request names none, so we do the same read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import h11
import trio

from ..remote import RemoteError
from ..transport import HandshakeError
from ._endpoint import KubeEndpoint
from ._errors import ContainerNotRunning

#: Largest API answer we read (a pod object is a few KiB; hundreds with many env vars).
MAX_RESPONSE = 8 * 1024 * 1024
#: Seconds for the whole GET after the connection is up.
READ_TIMEOUT = 30.0
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


async def get_json(endpoint: KubeEndpoint, path: str) -> dict[str, Any]:
    """``GET path`` (under the server URL's path prefix) and decode the JSON answer.

    Raises :class:`~muxstream.remote.RemoteError` (status, message, reason) for
    any non-200 answer, ``trio.TooSlowError`` past :data:`READ_TIMEOUT`.
    """
    stream, host = await endpoint.connect()
    async with stream:
        prefix = urlsplit(endpoint.url).path.rstrip("/")
        conn = h11.Connection(h11.CLIENT)
        headers = [("host", host), ("accept", "application/json"), *endpoint.headers()]
        request = h11.Request(method="GET", target=prefix + path, headers=headers)
        with trio.fail_after(READ_TIMEOUT):
            try:
                status, body = await _exchange(stream, conn, request, path)
            except h11.ProtocolError as exc:
                raise HandshakeError(f"malformed HTTP response: {exc}") from exc
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status != 200 or not isinstance(document, dict):
        message, reason = body.decode("utf-8", "replace").strip(), ""
        if isinstance(document, dict):
            message = str(document.get("message") or message)
            reason = str(document.get("reason") or "")
        raise RemoteError(status, message or f"HTTP {status}", reason)
    return document


async def _exchange(
    stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request, path: str
) -> tuple[int, bytearray]:
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    status, body = 0, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_RESPONSE:
                raise RemoteError(status, f"answer to GET {path} is too large")
        elif isinstance(event, h11.EndOfMessage):
            return status, body
        elif isinstance(event, h11.ConnectionClosed):
            raise HandshakeError(f"connection closed during GET {path}")


def pod_path(namespace: str, pod: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}"


class DefaultContainer(NamedTuple):
    """The container kubectl picks in a pod, and why (:func:`default_container`)."""

    name: str
    names: list[str]  # every container of the pod
    annotated: bool  # chosen by the default-container annotation


def default_container(pod: Mapping[str, Any]) -> DefaultContainer:
    """The container kubectl would pick in a pod object (module docstring).

    Raises :class:`ContainerNotRunning` for a pod that has completed (kubectl:
    "cannot exec into a container in a completed pod"), ValueError for a pod
    without containers.
    """
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise ContainerNotRunning(
            400,
            f"cannot exec into a container in a completed pod; current phase is {phase}",
            "BadRequest",
        )
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    if not names:
        raise ValueError("the pod has no containers")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    wanted = annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    if wanted in names:
        return DefaultContainer(wanted, names, True)
    return DefaultContainer(names[0], names, False)
