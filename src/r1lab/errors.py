"""User-facing errors: raised for mistakes in input, printed by the CLI as one readable message."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: says what was wrong, where, and how to fix it.

    The CLI prints it without a traceback and exits with status 2.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"  where: {self.where}")
        if self.fix:
            parts.append(f"  fix:   {self.fix}")
        return "\n".join(parts)
