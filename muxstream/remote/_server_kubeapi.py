"""Just enough of the Kubernetes API for kubectl exec/attach/cp/port-forward (sans-IO).

What kubectl v1.32 asks before it execs (observed against a logging server,
see docs/kubernetes.md): ``GET /version``, ``GET /api`` and ``GET /apis`` (it
offers aggregated discovery, ``application/json;g=apidiscovery.k8s.io;v=v2;
as=APIGroupDiscoveryList``, and falls back to the legacy documents when the
server answers plain ``application/json``), ``GET /api/v1`` (the legacy
resource list), ``GET /api/v1/namespaces/NS/pods/NAME``, and finally the
``exec``/``attach``/``portforward`` subresource. We serve the legacy documents
only: they are smaller and kubectl accepts them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from ._server_backend import ExecRequest

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-muxstream",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_RESOURCES = [
    {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "list"],
        "shortNames": ["po"],
    },
    {
        "name": "pods/attach",
        "singularName": "",
        "namespaced": True,
        "kind": "PodAttachOptions",
        "verbs": ["create", "get"],
    },
    {
        "name": "pods/exec",
        "singularName": "",
        "namespaced": True,
        "kind": "PodExecOptions",
        "verbs": ["create", "get"],
    },
    {
        "name": "pods/portforward",
        "singularName": "",
        "namespaced": True,
        "kind": "PodPortForwardOptions",
        "verbs": ["create", "get"],
    },
]

SUBRESOURCES = ("exec", "attach", "portforward")
#: The exec/attach query's boolean parameters.
FLAG_PARAMETERS = ("stdin", "stdout", "stderr", "tty")
# The spellings Go's strconv.ParseBool accepts (the API server decodes
# PodExecOptions with it and answers 400 to anything else).
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """An HTTP response for a plain API request."""

    status: int
    body: bytes
    content_type: str = "application/json"


def status_body(code: int, reason: str, message: str) -> bytes:
    """A metav1.Status failure document (what kubectl prints as "Error from server")."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


def _json(obj: object) -> ApiResponse:
    return ApiResponse(200, json.dumps(obj).encode())


@dataclass(frozen=True, slots=True)
class SubresourceRequest:
    """A request for ``pods/NAME/{exec,attach,portforward}``."""

    kind: str  # one of SUBRESOURCES
    namespace: str
    pod: str
    query: Mapping[str, Sequence[str]]

    def flag(self, name: str, default: bool = False) -> bool:
        """The last value of boolean parameter ``name`` (``default`` if absent).
        Call :meth:`query_error` first: an unparsable value reads as False."""
        values = self.query.get(name)
        if not values:
            return default
        return values[-1] in _TRUE

    def query_error(self) -> str | None:
        """Why this exec/attach query is malformed, or None.

        Malformed: a boolean parameter that Go's ``strconv.ParseBool`` would
        refuse; a ``command`` whose argv[0] is empty; any ``command`` value with
        a NUL byte (no program can receive it; ``execve`` would fail later).
        """
        for name in FLAG_PARAMETERS:
            for value in self.query.get(name, ()):
                if value not in _TRUE and value not in _FALSE:
                    return f"invalid value {value!r} for {name}: must be true or false"
        command = self.query.get("command", ())
        if command and not command[0]:
            return "the command's first word (argv[0]) is empty"
        if any("\0" in word for word in command):
            return "the command contains a NUL byte"
        return None

    def exec_request(self) -> ExecRequest:
        """The :class:`ExecRequest` this exec/attach query describes.

        kubectl sets ``stderr=false`` itself when it allocates a TTY; a
        TTY never has a separate stderr.
        """
        tty = self.flag("tty")
        return ExecRequest(
            command=tuple(self.query.get("command", ())),
            stdin=self.flag("stdin"),
            stdout=self.flag("stdout", True if self.kind == "exec" else False),
            stderr=self.flag("stderr") and not tty,
            tty=tty,
            container=(self.query.get("container") or [""])[-1],
            pod=self.pod,
            namespace=self.namespace,
            attach=self.kind == "attach",
        )

    def ports(self) -> list[int]:
        """Ports named in the query (``ports=``, comma-separated), informational for
        port-forward. Call :meth:`ports_error` first: invalid ones are skipped."""
        result = []
        for value in self.query.get("ports", ()):
            for part in value.split(","):
                port = parse_port(part)
                if port is not None:
                    result.append(port)
        return result

    def ports_error(self) -> str | None:
        """Why this port-forward query's ``ports=`` is malformed, or None."""
        for value in self.query.get("ports", ()):
            for part in value.split(","):
                if parse_port(part) is None:
                    return f"invalid port {part[:16]!r}: must be 1-65535 in ASCII digits"
        return None


_ASCII_DIGITS = frozenset("0123456789")


def parse_port(text: str) -> int | None:
    """``text`` as a TCP port (1-65535), or None. Strict: ASCII digits only, as
    kubelet's ``strconv.ParseUint`` reads them: no sign, space, underscore or
    other scripts' digits (Python's ``int`` takes ``+7199``, `` 7199``,
    ``7_199`` and Arabic-Indic digits; ``str.isdigit`` is true for ``²``)."""
    if not text or len(text) > 10 or not set(text) <= _ASCII_DIGITS:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


class PortRanges(Collection[int]):
    """The ports of some inclusive ``(low, high)`` ranges, without listing each
    port: for ``RemoteServerConfig.allowed_ports`` (``--allow-port``)."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.ranges = tuple(sorted(ranges))

    @staticmethod
    def parse_range(text: str) -> tuple[int, int]:
        """``PORT`` or ``LOW-HIGH`` as an inclusive (low, high); ValueError otherwise."""
        low_text, dash, high_text = text.partition("-")
        low, high = parse_port(low_text), parse_port(high_text if dash else low_text)
        if low is None or high is None or low > high:
            raise ValueError(f"{text!r} is not a port (1-65535) or a range LOW-HIGH")
        return low, high

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(low <= port <= high for low, high in self.ranges)

    def __iter__(self) -> Iterator[int]:
        for port in range(1, 65536):
            if port in self:
                yield port

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"PortRanges({list(self.ranges)!r})"


class KubeApi:
    """The fake API server state: pods in one namespace, each with containers.

    ``pods`` maps pod name to its container names (the first is the default,
    like the ``kubectl.kubernetes.io/default-container`` annotation).
    ``tty_containers`` marks containers whose spec allocates a TTY (kubectl
    attach -t refuses a TTY otherwise).
    """

    def __init__(
        self,
        pods: Mapping[str, Sequence[str]] | None = None,
        *,
        namespace: str = "default",
        tty_containers: Sequence[str] = (),
    ) -> None:
        self.pods = {
            name: list(containers) for name, containers in (pods or {"demo": ["main"]}).items()
        }
        self.namespace = namespace
        self.tty_containers = set(tty_containers)

    def pod_object(self, name: str) -> dict[str, object]:
        containers = self.pods[name]
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": f"00000000-0000-0000-0000-{zlib.crc32(name.encode()):012d}",
                "resourceVersion": "1",
                "annotations": {"kubectl.kubernetes.io/default-container": containers[0]},
            },
            "spec": {
                "containers": [
                    {
                        "name": c,
                        "image": "muxstream/local",
                        "stdin": True,
                        "tty": c in self.tty_containers,
                    }
                    for c in containers
                ],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": c,
                        "ready": True,
                        "restartCount": 0,
                        "image": "muxstream/local",
                        "imageID": "",
                        "started": True,
                        "state": {"running": {}},
                    }
                    for c in containers
                ],
            },
        }

    def parse_subresource(self, target: str) -> SubresourceRequest | ApiResponse | None:
        """Classify a request target.

        Returns a :class:`SubresourceRequest` for a known pod's exec/attach/
        portforward, an :class:`ApiResponse` (404) for an unknown pod or
        container, and None when the target is not a subresource.
        """
        split = urlsplit(target)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        if len(parts) != 7 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
            return None
        if parts[6] not in SUBRESOURCES:
            return None
        namespace, pod = parts[3], parts[5]
        if namespace != self.namespace or pod not in self.pods:
            return ApiResponse(404, status_body(404, "NotFound", f'pods "{pod}" not found'))
        query = parse_qs(split.query, keep_blank_values=True)
        if parts[6] != "portforward":
            # No container named: the pod's default (first) one, as the API server does.
            container = (query.get("container") or [self.pods[pod][0]])[-1]
            if container not in self.pods[pod]:
                return ApiResponse(
                    400,
                    status_body(
                        400, "BadRequest", f"container {container} is not valid for pod {pod}"
                    ),
                )
            query["container"] = [container]
        return SubresourceRequest(parts[6], namespace, pod, query)

    def respond(self, method: str, target: str) -> ApiResponse:
        """Answer a plain (non-upgrade) API request."""
        path = urlsplit(target).path.rstrip("/") or "/"
        if method not in ("GET", "HEAD"):
            return ApiResponse(405, status_body(405, "MethodNotAllowed", f"{method} not allowed"))
        if path in ("/version", "/version/"):
            return _json(KUBERNETES_VERSION)
        if path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": ""}
                    ],
                }
            )
        if path == "/apis":
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if path == "/api/v1":
            return _json({"kind": "APIResourceList", "groupVersion": "v1", "resources": _RESOURCES})
        parts = path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            namespace, pod = unquote(parts[3]), unquote(parts[5])
            if namespace == self.namespace and pod in self.pods:
                return _json(self.pod_object(pod))
            return ApiResponse(404, status_body(404, "NotFound", f'pods "{pod}" not found'))
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            items = (
                [self.pod_object(p) for p in self.pods]
                if unquote(parts[3]) == self.namespace
                else []
            )
            return _json({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        return ApiResponse(
            404, status_body(404, "NotFound", "the server could not find the requested resource")
        )
