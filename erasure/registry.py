"""One small generic registry: methods, metrics and prompt sets are plugged in by name.

    METHODS: Registry[type[Method]] = Registry("method")

    @METHODS.register("esd")
    class ESD: ...

    METHODS.register("uce", UCE)       # or as a plain call
    METHODS.get("esdd")                # ErasureError: unknown method 'esdd'; did you mean 'esd'? ...

A typo is a user mistake, so ``get`` raises :class:`ErasureError` with one line that names the
closest registered names; registering a name twice is refused unless ``replace=True``, so a
plugin cannot silently shadow a built-in.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar, overload

from erasure.errors import ErasureError

T = TypeVar("T")

# How many known names an "unknown name" error lists before it summarises the rest.
_MAX_NAMES_IN_ERROR = 12


class Registry(Generic[T]):
    """Items of one kind (``kind`` is used in error messages, e.g. "method"), looked up by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str, item: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, item: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Register ``item`` under ``name`` and return it; without ``item``, return a decorator."""
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ErasureError(f"{self.kind} name {name!r} is invalid; use a non-empty name without surrounding spaces")
        if item is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, replace=replace)
                return obj

            return decorator
        if name in self._items and not replace:
            raise ErasureError(f"{self.kind} '{name}' is already registered; pick another name or pass replace=True")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item registered as ``name``; an unknown name raises ErasureError with "did you mean"."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ErasureError(self._unknown_message(name)) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._items))

    def items(self) -> tuple[tuple[str, T], ...]:
        """(name, item) pairs, sorted by name."""
        return tuple(sorted(self._items.items(), key=lambda pair: pair[0]))

    def suggestions(self, name: str, n: int = 3) -> list[str]:
        """Registered names closest to ``name`` (case-insensitive), best first."""
        lowered = {known.lower(): known for known in self._items}
        close = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.6)
        return [lowered[c] for c in close]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self.names())})"

    def _unknown_message(self, name: object) -> str:
        if not self._items:
            return f"unknown {self.kind} '{name}'; no {self.kind} is registered"
        close = self.suggestions(str(name))
        hint = f"did you mean '{close[0]}'? " if close else ""
        names = self.names()
        shown = ", ".join(names[:_MAX_NAMES_IN_ERROR])
        if len(names) > _MAX_NAMES_IN_ERROR:
            shown += f", ... ({len(names) - _MAX_NAMES_IN_ERROR} more)"
        return f"unknown {self.kind} '{name}'; {hint}known: {shown}"
