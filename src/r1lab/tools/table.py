"""The `sql` tool: read-only SQL (SQLite, from the standard library) over one table of records.

`Table(path)` loads a JSONL file of flat records (the same keys in every row; values strings, integers, floats or
null) into an in-memory SQLite table named after the file's stem unless `name` is given. `Table.sql(query)`
returns the result as text: a header line of column names and one line per row, ` | ` between values, at most
`max_rows` rows (then a line saying how many more). Only reading is allowed: an authorizer refuses every action
but SELECT, reading columns, functions and recursive CTEs (no INSERT, UPDATE, DELETE, DROP, CREATE, ATTACH,
PRAGMA), and a progress handler stops a query that runs past `time_limit_s` (a runaway recursive CTE).
A bad query raises ValueError with SQLite's message, which the tool box returns to the model as text.

Spec in `build_toolbox`: `{"name": "sql", "table": "records.jsonl"}`; the tool's description names the table
and its columns, so a model (and an SFT row's `tools` column) sees what it can ask.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.tools.box import Tool
from r1lab.tools.schema import function_schema

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPES = {bool: "INTEGER", int: "INTEGER", float: "REAL", str: "TEXT"}


class Table:
    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        max_rows: int = 20,
        time_limit_s: float = 2.0,
        where: str = "tools",
    ) -> None:
        path = Path(path)
        self.name = name or path.stem.replace("-", "_")
        self.max_rows, self.time_limit_s = max_rows, time_limit_s
        rows = _read_rows(path, where)
        self.columns = list(rows[0])
        for what in (self.name, *self.columns):
            if not _IDENTIFIER.match(what):
                raise UserError(
                    f"sql tool: {what!r} is not a plain SQL name (letters, digits, _)",
                    where=where,
                    fix="rename the table (the file's stem, or `name`) or the column",
                )
        types = {
            c: _TYPES.get(type(next((r[c] for r in rows if r[c] is not None), "")), "TEXT") for c in rows[0]
        }
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE TABLE {self.name} ({', '.join(f'{c} {types[c]}' for c in self.columns)})")
        marks = ", ".join("?" for _ in self.columns)
        self._db.executemany(
            f"INSERT INTO {self.name} VALUES ({marks})", [[r[c] for c in self.columns] for r in rows]
        )
        self._db.commit()
        self._db.set_authorizer(_authorize)
        self._deadline = 0.0
        self._db.set_progress_handler(self._too_long, 10_000)

    def description(self) -> str:
        return (
            f"Run a read-only SQL query (SQLite) on the table `{self.name}` with columns "
            f"{', '.join(self.columns)}; returns the header and at most {self.max_rows} rows."
        )

    def sql(self, query: str) -> str:
        """Run a read-only SQL query (SQLite) on the table; returns the header and the rows.

        Args:
            query: one SELECT statement, e.g. "SELECT COUNT(*) FROM t WHERE city = 'Kral'"
        """
        self._deadline = time.monotonic() + self.time_limit_s
        try:
            cursor = self._db.execute(query)
            rows = cursor.fetchmany(self.max_rows + 1)
            more = len(cursor.fetchall()) if len(rows) > self.max_rows else 0
        except sqlite3.Error as e:
            message = "the query ran too long and was stopped" if "interrupted" in str(e) else str(e)
            raise ValueError(f"SQL error: {message}") from None
        except sqlite3.Warning as e:  # e.g. "You can only execute one statement at a time."
            raise ValueError(f"SQL error: {e}") from None
        header = " | ".join(d[0] for d in cursor.description or ())
        lines = [header] + [" | ".join(_cell(v) for v in row) for row in rows[: self.max_rows]]
        if len(rows) > self.max_rows:
            lines.append(f"[{more + 1} more rows]")
        return "\n".join(lines) if rows else f"{header}\n(no rows)"

    def _too_long(self) -> int:
        return int(time.monotonic() > self._deadline)


def table_tool(path: str | Path, name: str | None = None, where: str = "tools") -> Tool:
    """The `sql` tool over the table of `path`, its description naming the table and its columns."""
    table = Table(path, name, where=where)
    schema = function_schema(table.sql, where)
    schema["function"]["description"] = table.description()
    return Tool(table.sql, schema, isolated=False)


def _authorize(action: int, *args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _read_rows(path: Path, where: str) -> list[dict[str, Any]]:
    # r1lab.data's reader (malformed lines named file:line), imported here: the r1lab.data package imports torch
    from r1lab.data.readers import read_records
    from r1lab.data.tool_rows import jsonl_where

    if not path.is_file():
        raise UserError(
            f"sql tool: no table file {path}", where=where, fix='{"name": "sql", "table": FILE.jsonl}'
        )
    rows = read_records(str(path))
    for number, row in enumerate(rows, start=1):
        if row.keys() != rows[0].keys():
            raise UserError(
                "sql tool: every record must have the first record's keys",
                where=jsonl_where(str(path), number),
                fix="write one flat record per line, the same columns in each",
            )
        bad = [k for k, v in row.items() if v is not None and type(v) not in _TYPES]
        if bad:
            raise UserError(
                f"sql tool: column(s) {bad} hold values that are not strings or numbers",
                where=jsonl_where(str(path), number),
            )
    if not rows:
        raise UserError(f"sql tool: the table file {path} has no rows", where=where)
    return rows
