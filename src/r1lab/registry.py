"""Name -> function registries, so a config picks a loss, an advantage or a reward by name."""

from __future__ import annotations

import difflib
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
            raise UserError(f"unknown {self.kind} {name!r}", fix=self.fix_for(name))
        return self._items[name]

    def fix_for(self, name: str) -> str:
        """'did you mean X? (one of: ...)' for a name that is not registered."""
        close = difflib.get_close_matches(str(name), self._items, n=1, cutoff=0.6)
        known = f"use one of: {', '.join(sorted(self._items))}"
        return f"did you mean {close[0]!r}? ({known})" if close else known

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
