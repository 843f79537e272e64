"""Name -> function registries, so a config picks a loss, an advantage or a reward by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from r1lab.errors import UserError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """A named table of functions. `@REG.register("name")` adds one; `REG.get(name)` finds it or fails clearly."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in self._items and self._items[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> F:
        if name not in self._items:
            raise UserError(
                f"unknown {self.kind} {name!r}",
                fix=f"use one of: {', '.join(sorted(self._items))}",
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
