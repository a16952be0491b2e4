"""Errors of :mod:`muxstream.kube`: kubeconfig problems, credentials, API refusals.

API refusals subclass :class:`muxstream.remote.RemoteError`, so code written
against the plain remote client keeps catching them. Which subclass a refusal
becomes is decided from the HTTP status and the ``metav1.Status`` the server
sent (:func:`api_error`): the reason field when the server gave one, then the
message texts the API server and the kubelet use for the same cases.
"""

from __future__ import annotations

from pathlib import Path

from ..remote import RemoteError


class KubeError(Exception):
    """Base class of the errors :mod:`muxstream.kube` raises itself."""


class KubeconfigError(KubeError, ValueError):
    """A kubeconfig is missing, malformed, or names something that does not work.

    ``str()`` is one line naming the file and the key: ``FILE: KEY: PROBLEM``.
    """

    def __init__(self, file: Path | str | None, key: str, problem: str) -> None:
        self.file = None if file is None else str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: " if self.file else "kubeconfig: "
        super().__init__(f"{where}{key + ': ' if key else ''}{problem}")


class MissingDependency(KubeError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class CredentialError(KubeError):
    """The credential source failed: an exec plugin that could not run or gave
    an unusable ExecCredential, or a token file that cannot be read."""


class ApiError(RemoteError):
    """The API server refused the request.

    Attributes: ``status`` (HTTP status), ``reason`` (the Status reason, e.g.
    ``"Forbidden"``; empty if the server sent none), ``message`` (the server's
    text, e.g. the RBAC denial).
    """

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(status, message, reason)


class Unauthorized(ApiError):
    """401: the credentials were refused (after one refresh, where possible)."""


class Forbidden(ApiError):
    """403: authenticated but not allowed; ``message`` carries the RBAC text."""


class NotFound(ApiError):
    """404: the object does not exist."""


class PodNotFound(NotFound):
    """404 for the pod named in the request."""


class ContainerNotFound(ApiError):
    """The pod has no container of that name."""


class ContainerNotRunning(ApiError):
    """The container exists but is not running (waiting, or the pod completed)."""


class BadRequest(ApiError):
    """400 for any other reason."""


# Texts the API server (pod strategy, streamLocation) and the kubelet use when
# the container cannot be reached: matched when no more specific reason exists.
_NOT_RUNNING_TEXTS = (
    "container not found",
    "is waiting to start",
    "completed pod",
    "does not have a host assigned",
    "not running",
    "stopped container",
)


def api_error(status: int, message: str, reason: str = "") -> ApiError:
    """The :class:`ApiError` subclass for a refusal (see the module docstring)."""
    text = message.lower()
    cls: type[ApiError] = ApiError
    if status == 401 or reason == "Unauthorized":
        cls = Unauthorized
    elif status == 403 or reason == "Forbidden":
        cls = Forbidden
    elif status == 404 or reason == "NotFound":
        cls = PodNotFound if text.startswith('pods "') else NotFound
    elif "is not valid for pod" in text:
        cls = ContainerNotFound
    elif any(t in text for t in _NOT_RUNNING_TEXTS):
        cls = ContainerNotRunning
    elif status == 400:
        cls = BadRequest
    return cls(status, message, reason)
