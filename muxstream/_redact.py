"""Secrets never reach a log: every muxstream logger scrubs them from its records.

Two kinds of secret are scrubbed from each record's final message:

* the tokens servers were configured with (:func:`register_secret`; a
  ``RemoteServerConfig`` registers its token), wherever they appear, e.g. in a
  logged argv (``exec -- echo <token>``);
* whatever follows ``Bearer`` and the values of query parameters whose name
  says they carry a credential (``token``, ``access_token``, ...): a wrong
  token in a request is often someone's right token for something else.

The scrubbing is a ``logging.Filter`` on each of our loggers (a logger's
filters see the records logged on it, before any handler), so it costs nothing
for records that are not emitted.
"""

from __future__ import annotations

import logging
import re

#: What replaces a secret in a log line.
REDACTED = "[REDACTED]"
#: The loggers muxstream logs on (each needs its own filter: filters are not inherited).
LOGGER_NAMES = (
    "muxstream",
    "muxstream.audit",
    "muxstream.cli",
    "muxstream.remote",
    "muxstream.transport",
)
#: Shorter strings are not scrubbed (they would mangle unrelated text); server
#: tokens are at least 16 characters anyway.
_MIN_SECRET = 8

_secrets: set[str] = set()
_CREDENTIALS = re.compile(
    r"(?i)(\b[a-z0-9_]*(?:token|bearer|auth|authorization|password|passwd|secret)"
    r"(?:=|%3D))[^&\s'\"]*"
)
_BEARER = re.compile(r"(?i)(\bbearer(?:\s+|%20|\+))[^\s'\"&,]+")


def register_secret(secret: str) -> None:
    """Scrub ``secret`` from every muxstream log record from now on."""
    if len(secret) >= _MIN_SECRET:
        _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` without registered secrets, Bearer credentials or credential-named
    query parameter values."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _CREDENTIALS.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through :func:`redact` (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            # Tracebacks quote exception messages, which may quote a request.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactingFilter()


def install() -> None:
    """Attach the filter to every muxstream logger (idempotent)."""
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


install()
