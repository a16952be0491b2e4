"""Who may run commands, and from where: token checks and the listen-address policy.

Two decisions the exec service and ``muxstream serve`` share, kept in one place
so both enforce the same rules (docs/reliability.md, "Security of the exec
service"):

* :func:`bearer_token_matches`: an ``Authorization: Bearer`` value against the
  configured token. Both sides are hashed with SHA-256 first and the two 32-byte
  digests compared with :func:`hmac.compare_digest`: the comparison takes the
  same time whatever the presented token is, and ``compare_digest`` on the raw
  strings would return at once on a length mismatch, leaking the token's length.
  Any ``str`` is accepted (non-ASCII, lone surrogates, empty): a malformed header
  is a mismatch, never an exception.
* :func:`browser_refusal`: a web page can make a browser connect to a
  loopback server (``new WebSocket("ws://127.0.0.1:7000/...")``) and a DNS
  rebinding can make one send any ``Host``. Browsers always send ``Origin`` on
  WebSocket handshakes and cross-site requests; kubectl and the Python clients
  never do. So a request with an ``Origin`` is refused unless that origin is
  explicitly allowed, in every auth mode; without authentication, the ``Host``
  must also name this machine's loopback (an IP literal cannot be rebound).
* :func:`exposure_problem`: serving beyond loopback without authentication is
  always refused; serving beyond loopback without TLS is refused unless the
  caller opts out explicitly (``insecure_no_tls``), because a bearer token sent
  in clear text is as good as no token for anyone on the path.
* :func:`no_auth_warning`: the one line both say at start-up when they serve
  without authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Collection, Sequence
from typing import Literal

from ._redact import register_secret

#: Characters a token may contain: visible ASCII, as RFC 6750's b64token and
#: every kubeconfig token are. A space could never survive ``Bearer <token>``
#: parsing, and non-ASCII would compare differently over HTTP (latin-1 octets)
#: and SPDY headers (UTF-8).
_TOKEN_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))


#: Shortest token a server accepts: 16 random base64url characters are 96 bits,
#: beyond any online guessing; shorter ones are usually words ("secret").
MIN_TOKEN_LENGTH = 16


def validate_token(token: str) -> None:
    """Raise ValueError unless ``token`` is visible ASCII (no spaces) of at least
    :data:`MIN_TOKEN_LENGTH` characters. Registers it for log redaction."""
    if not token or not set(token) <= _TOKEN_CHARACTERS:
        raise ValueError(
            "a token must be non-empty visible ASCII (no spaces or control characters)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"a token must be at least {MIN_TOKEN_LENGTH} characters (this one has "
            f"{len(token)}); make one with: openssl rand -hex 16"
        )
    register_secret(token)


#: Failed attempts a source address may make at full speed.
DEFAULT_THROTTLE_BURST = 10
#: Failed attempts per second an address earns back: its sustained guessing rate.
DEFAULT_THROTTLE_RATE = 1.0
#: Longest one failure's answer is held back (seconds).
DEFAULT_THROTTLE_MAX_DELAY = 10.0
#: Addresses remembered (the least recently failing is forgotten first): bounds memory.
DEFAULT_THROTTLE_ADDRESSES = 4096


class AuthThrottle:
    """Slows down a source address that keeps failing authentication.

    A leaky bucket per address (sans-IO: the caller passes the time): each
    failure adds one, the level drains at ``rate`` per second, and once it is
    above ``burst`` the answer to a failure is held until it is back there
    (at most ``max_delay``). A sequential guesser then gets ``rate`` attempts a
    second; parallel ones are bounded by the server's unauthenticated-connection
    limit. Only failures are slowed: a client with the right token from the
    same address (every local user is 127.0.0.1) is never held.
    """

    def __init__(
        self,
        *,
        burst: int = DEFAULT_THROTTLE_BURST,
        rate: float = DEFAULT_THROTTLE_RATE,
        max_delay: float = DEFAULT_THROTTLE_MAX_DELAY,
        max_addresses: int = DEFAULT_THROTTLE_ADDRESSES,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.max_delay = max_delay
        self.max_addresses = max_addresses
        self._levels: dict[str, tuple[float, float]] = {}  # address -> (level, when)

    def failed(self, address: str, now: float) -> float:
        """Record one failed attempt from ``address``; return the seconds to hold
        its answer (0 within the burst)."""
        level, when = self._levels.pop(address, (0.0, now))
        level = max(0.0, level - (now - when) * self.rate) + 1
        self._levels[address] = (level, now)  # re-inserted: dict order is recency
        if len(self._levels) > self.max_addresses:
            del self._levels[next(iter(self._levels))]
        return min(self.max_delay, max(0.0, (level - self.burst) / self.rate))


def peer_host(peer: str) -> str:
    """The address part of ``host:port`` / ``[v6]:port`` (the throttle's key)."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    return peer.rpartition(":")[0] or peer


def _digest(text: str) -> bytes:
    # surrogatepass: a str that came from anywhere still encodes; never raises.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def bearer_token_matches(expected: str, authorization: str | None) -> bool:
    """Whether ``authorization`` (an ``Authorization`` header value, or None) is
    ``Bearer <expected>``.

    Constant time in the token: SHA-256 digests of both sides (always 32 bytes)
    go through :func:`hmac.compare_digest`, which runs for every call, whatever
    the scheme. Never raises for a malformed value: missing, empty, another
    scheme, non-ASCII or control characters are all simply False.
    """
    scheme, _, presented = (authorization or "").partition(" ")
    same = hmac.compare_digest(_digest(presented.strip()), _digest(expected))
    return same and scheme.lower() == "bearer" and bool(expected)


def is_loopback_host(host: str | None) -> bool:
    """Whether binding ``host`` keeps the service on this machine.

    True for 127.0.0.0/8, ``::1`` and the name ``localhost``. Wildcards
    (``0.0.0.0``, ``::``, ``""``, None), other names and anything unparsable are
    not loopback: when in doubt, the stricter rules apply.
    """
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


Problem = Literal["auth", "tls"]


def exposure_problem(
    host: str | None, *, tls: bool, insecure_no_auth: bool, insecure_no_tls: bool
) -> Problem | None:
    """What is wrong with listening on ``host`` this way, or None if nothing.

    ``"auth"``: no authentication beyond loopback (no opt-out exists).
    ``"tls"``: no TLS beyond loopback, and ``insecure_no_tls`` was not given.
    """
    if is_loopback_host(host):
        return None
    if insecure_no_auth:
        return "auth"
    if not tls and not insecure_no_tls:
        return "tls"
    return None


def _host_name(host: str) -> str:
    """The host part of a ``Host`` header value (port and IPv6 brackets removed)."""
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        port_ok = not rest or (rest[:1] == ":" and rest[1:].isdigit())
        return name if bracket and port_ok else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isascii() and port.isdigit() and ":" not in name else host


def is_local_host_header(host: str) -> bool:
    """Whether a ``Host`` header value names loopback: ``localhost`` or a loopback
    IP literal (127.0.0.0/8, ``[::1]``), with or without a port.

    A DNS name other than ``localhost`` is not: DNS rebinding makes any name
    resolve to 127.0.0.1 after the browser's same-origin check.
    """
    name = _host_name(host.strip())
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def browser_refusal(
    origins: Sequence[str],
    hosts: Sequence[str],
    *,
    allowed_origins: Collection[str],
    no_auth: bool,
) -> str | None:
    """Why a request with these ``Origin`` and ``Host`` header values is refused
    (answer 403), or None.

    ``origins``/``hosts`` are every value of the header (usually zero or one).
    Refused: any ``Origin`` not in ``allowed_origins`` (compared without case and
    a trailing ``/``; ``null`` is an origin like any other), more than one
    ``Origin``; with ``no_auth``, a missing, repeated or non-loopback ``Host``.
    """
    allowed = {_normal_origin(o) for o in allowed_origins}
    if len(origins) > 1:
        return "more than one Origin header"
    if origins and _normal_origin(origins[0]) not in allowed:
        return f"Origin {origins[0][:200]!r} is not allowed (see --allow-origin)"
    if no_auth:
        if len(hosts) != 1:
            return "a request without authentication needs exactly one Host header"
        if not is_local_host_header(hosts[0]):
            return (
                f"Host {hosts[0][:200]!r} is not loopback; without authentication only "
                "localhost and loopback addresses are served (DNS rebinding)"
            )
    return None


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def no_auth_warning(where: str) -> str:
    """The one line said at start-up when a server runs without authentication."""
    try:
        import pwd

        user = f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"
    except (ImportError, KeyError):
        user = "this user"
    return (
        f"no authentication on {where}: every local user (and every program on this "
        f"machine) can run commands as {user} through it"
    )
