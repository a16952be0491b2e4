"""HTTP header lists as the transports hand them out and take them in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeAlias, overload

__all__ = ["HTTPHeaders", "HeadersLike", "negotiate_protocol"]

#: What header arguments accept: a mapping (one value per name) or pairs (repeats
#: allowed, e.g. several ``X-Stream-Protocol-Version`` lines).
HeadersLike: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]


def _text(value: str | bytes) -> str:
    # HTTP/1.1 field values are octets; latin-1 maps each octet to one code point
    # and back, so nothing is lost or rejected here (h11 validates the syntax).
    return value.decode("latin-1") if isinstance(value, bytes) else value


class HTTPHeaders(Sequence[tuple[str, str]]):
    """An immutable list of ``(name, value)`` pairs; names are lower-case.

    Order and repeated names are kept, as on the wire. Lookups ignore case.
    """

    __slots__ = ("_items",)

    def __init__(self, items: HeadersLike | Iterable[tuple[bytes, bytes]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[str, str], ...] = tuple(
            (_text(name).lower(), _text(value)) for name, value in pairs
        )

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HTTPHeaders):
            return self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"HTTPHeaders({list(self._items)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header *name*, or *default*."""
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of header *name*, in order (one per header line)."""
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def get_tokens(self, name: str) -> list[str]:
        """Return the comma-separated elements of every *name* line, stripped.

        For list-valued headers: ``Connection``, ``Upgrade``,
        ``Sec-WebSocket-Protocol``. Empty elements are dropped; case is kept.
        """
        tokens: list[str] = []
        for value in self.get_all(name):
            tokens.extend(part.strip() for part in value.split(",") if part.strip())
        return tokens

    def has_token(self, name: str, token: str) -> bool:
        """Whether list-valued header *name* contains *token* (case-insensitive)."""
        token = token.lower()
        return any(t.lower() == token for t in self.get_tokens(name))

    def as_bytes(self) -> list[tuple[bytes, bytes]]:
        """The pairs encoded for h11 (latin-1)."""
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._items]


def negotiate_protocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """Pick the protocol version to speak, the way Kubernetes does.

    Returns the first entry of *offered* (the client's
    ``X-Stream-Protocol-Version`` values or WebSocket subprotocols, in the
    client's order of preference) that is also in *supported*, or None when
    they have nothing in common. Matching is exact, as in Kubernetes'
    ``httpstream.Handshake``.
    """
    wanted = set(supported)
    for protocol in offered:
        if protocol in wanted:
            return protocol
    return None
