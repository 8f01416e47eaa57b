"""What a handler gets: the request as an ``Event``, the instance as a ``Context``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from platshim.secretfiles import read_secret, read_secret_text

_UNSET: Any = object()


class Headers(Mapping[str, str]):
    """Request headers: case-insensitive; a repeated header's values joined by ", "."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        index: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            previous = index.get(key)
            index[key] = (previous[0], f"{previous[1]}, {value}") if previous else (name, value)
        self._index = index

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (entry[0] for entry in self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def get(self, name: str, default: Any = None) -> Any:
        entry = self._index.get(name.lower())
        return entry[1] if entry else default

    def getlist(self, name: str) -> list[str]:
        """Every value of a header, in the order received."""
        key = name.lower()
        return [value for item, value in self._items if item.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Query(dict[str, str]):
    """Query parameters: a dict of each name's first value; ``getlist`` gives all."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._pairs = pairs
        for name, value in pairs:
            self.setdefault(name, value)

    def getlist(self, name: str) -> list[str]:
        """Every value of a parameter (``?a=1&a=2`` -> ``["1", "2"]``)."""
        return [value for item, value in self._pairs if item == name]

    getall = getlist


class Event:
    """One HTTP request, in the shape of OpenFaaS python3-http's ``event``."""

    __slots__ = ("_json", "body", "headers", "method", "path", "query", "query_string")

    def __init__(
        self, method: str, path: str, query_string: str, headers: Headers, body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.query = Query(parse_qsl(query_string, keep_blank_values=True))
        self.headers = headers
        self.body = body
        self._json: Any = _UNSET

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not valid JSON."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body) if self.body.strip() else None
            except ValueError:
                self._json = None
        return self._json

    def __repr__(self) -> str:
        return f"Event({self.method} {self.path!r}, {len(self.body)} bytes)"


class Context:
    """Facts about the instance and the request that are not part of the request."""

    __slots__ = (
        "call_id",
        "function",
        "hostname",
        "request_id",
        "trace_id",
        "traceparent",
        "tracestate",
        "version",
    )

    def __init__(
        self,
        function: str,
        version: str,
        hostname: str,
        request_id: str,
        call_id: str = "",
        *,
        trace_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.function = function
        self.version = version
        self.hostname = hostname
        self.request_id = request_id
        self.call_id = call_id
        # The W3C trace context of the request (platshim.tracing): all None
        # unless the request had a valid traceparent.
        self.trace_id = trace_id
        self.traceparent = traceparent
        self.tracestate = tracestate

    def secret(self, name: str) -> str:
        """The value of the function's secret ``name`` as text (the file's exact
        content, a trailing newline included). Raises ``SecretNotFoundError`` (a
        LookupError) naming it when the function has no such secret."""
        return read_secret_text(name)

    def secret_bytes(self, name: str) -> bytes:
        """The value of the function's secret ``name`` as bytes."""
        return read_secret(name)

    def __repr__(self) -> str:
        return f"Context(function={self.function!r}, hostname={self.hostname!r})"
