"""Name → object registries filled by decorators (criteria, resets, models, datasets)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of `T`s; `@REG.register("name")` adds one, `REG["name"]` looks it up with a clear error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator adding the decorated object under `name` (default: its `__name__`)."""

        def add(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The error message for an unknown name, listing the valid ones."""
        return f"unknown {self.kind} '{name}'; valid choices: {', '.join(sorted(self._items))}"

    def check(self, name: str) -> None:
        """Raise ValueError naming the valid choices if `name` is not registered."""
        if name not in self._items:
            raise ValueError(self.unknown(name))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)
