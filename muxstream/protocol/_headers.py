"""Headers: what a header block holds, as a read-only mapping.

A leaf of the protocol: the frames and events carry it, and the header-block
codec (``_header_block``) encodes and decodes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

HeadersLike = Mapping[str, "str | Sequence[str]"] | Iterable[tuple[str, str]]


class Headers(Mapping[str, str]):
    """Header block contents: lower-case names, each with one or more values.

    ``headers[name]`` is the first value (like Go's ``http.Header.Get``);
    ``headers.get_all(name)`` is every value. Lookups ignore case. On the wire,
    several values of one name travel NUL-joined in a single entry.
    """

    __slots__ = ("_items",)

    def __init__(self, source: HeadersLike | None = None) -> None:
        self._items: dict[str, list[str]] = {}
        if source is None:
            return
        pairs: Iterable[tuple[str, str | Sequence[str]]]
        if isinstance(source, Mapping):
            pairs = source.items()
        else:
            pairs = source
        for name, value in pairs:
            values = [value] if isinstance(value, str) else list(value)
            if values:  # a name with no values is absent (headers[name] must not fail)
                self._items.setdefault(name.lower(), []).extend(values)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (an empty list if absent)."""
        return list(self._items.get(name.lower(), ()))

    def items_all(self) -> Iterator[tuple[str, list[str]]]:
        """``(name, values)`` pairs in block order."""
        for name, values in self._items.items():
            yield name, list(values)

    @property
    def nbytes(self) -> int:
        """Bytes of names and values: what these headers hold in memory, roughly."""
        return sum(len(name) + sum(map(len, values)) for name, values in self._items.items())

    def merged(self, other: Headers) -> Headers:
        """New headers: these, then ``other``'s, a name's values kept in order."""
        merged = Headers()
        items = merged._items
        for source in (self._items, other._items):
            for name, values in source.items():
                items.setdefault(name, []).extend(values)
        return merged

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple((k, tuple(v)) for k, v in self._items.items()))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
