"""One generic string-keyed registry, so users can add losses, tasks or mappings by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kdistill.errors import KDistillError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; refuses duplicates and lists valid names on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise KDistillError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Unregister `name` (a plugin's or a test's own entry); a miss is a KDistillError listing the valid names."""
        self.get(name)
        del self._items[name]

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "none"
            raise KDistillError(f"unknown {self.kind} '{name}' (valid: {valid})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
