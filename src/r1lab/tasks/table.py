"""Table: questions over a generated table of records that only the `sql` tool can answer (TaTToo-like
tool-grounded table reasoning, with SQL as the tool).

The table of one seed: fictional employees, one row each: `name` (unique), `department`, `city`, `salary` (a
multiple of 100, all distinct) and `start_year`. `table_rows(seed)` is that table (`write_table(path, seed)`
writes it as the JSONL the `sql` tool reads, named `employees`); it depends on the seed and the `rows` knob only,
never on the split, so held-out questions ask about the same table as the training ones.

Questions (`kinds`), each with its gold SQL (`query`, also its canonical key) and the answer computed in Python
from the rows (tested to agree with the tool's); the filters are 1 to 3 of department, city and start year:
  value   "What is the start year of Mira Kalos?"                                      -> 2007
  count   "How many employees of the Optics department working in Drelan are there?"   -> 3
  sum     "What is the total salary of the employees working in Drelan who started before 2004?" -> 412600
  top     "Who is the lowest-paid employee of the Press department?"  -> a name (salaries are distinct)
The demonstration is a tool conversation built by running the real `sql` tool on the table: one call with the
gold query, the tool's output, the value read from it and `Answer: <x>`. A record has `messages`, `completion`
(as r1lab.tasks.lookup's) and `tools` (the `sql` tool's schema, for SFT rows rendered as the rollout renders them).
Default reward: `exact` on `answer`.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, Task, format_instruction, require, write_jsonl
from r1lab.tasks.lookup import _FIRST, _KINDS, _words
from r1lab.tasks.tool_turns import flatten, tool_call_text

TABLE = "employees"
KINDS = ("value", "count", "sum", "top")


def table_rows(seed: int = 0, rows: int = 200) -> list[dict[str, Any]]:
    """The employees table of `seed`: `rows` records {name, department, city, salary, start_year}."""
    rng = random.Random(f"table:{seed}")
    taken = {w.lower() for w in _FIRST}
    cities = _words(rng, 6, taken)
    surnames = _words(rng, rows, taken)
    salaries = rng.sample(range(250, 1500), rows)  # hundreds, all distinct: "highest-paid" has one answer
    return [
        {
            "name": f"{rng.choice(_FIRST)} {surname}",
            "department": rng.choice(_KINDS),
            "city": rng.choice(cities),
            "salary": salaries[i] * 100,
            "start_year": rng.randint(1995, 2024),
        }
        for i, surname in enumerate(surnames)
    ]


def write_table(path: str | Path, seed: int = 0, rows: int = 200) -> Path:
    """Write `table_rows(seed, rows)` as JSONL to `path` (for `build_toolbox([{"name": "sql", "table": path,
    "table_name": "employees"}])`)."""
    return write_jsonl(path, table_rows(seed, rows))


def sql_toolbox(path: str | Path) -> Any:
    from r1lab.tools import build_toolbox

    return build_toolbox([{"name": "sql", "table": str(path), "table_name": TABLE}], where="task table")


_VALUES = {"salary": "salary", "start_year": "start year", "city": "city", "department": "department"}


def _filters(row: dict[str, Any], rng: random.Random, count: int) -> list[tuple[str, str, Any]]:
    """`count` of the filters (department, city, start year) that `row` passes, as (SQL, words, test)."""
    dept, city, year = row["department"], row["city"], row["start_year"] + rng.randint(1, 6)
    options = [
        (f"department = '{dept}'", f"of the {dept} department", lambda r: r["department"] == dept),
        (f"city = '{city}'", f"working in {city}", lambda r: r["city"] == city),
        (f"start_year < {year}", f"who started before {year}", lambda r: r["start_year"] < year),
    ]
    return [options[i] for i in sorted(rng.sample(range(3), count))]


def question(kind: str, rows: list[dict[str, Any]], rng: random.Random) -> tuple[str, str, str, str, str]:
    """(canonical key, question, gold SQL, answer computed from `rows`, what the answer is) of one question."""
    row = rng.choice(rows)  # the filters are ones this row passes, so an aggregate has at least one row
    if kind == "value":
        column = rng.choice(list(_VALUES))
        sql = f"SELECT {column} FROM {TABLE} WHERE name = '{row['name']}'"
        return sql, f"What is the {_VALUES[column]} of {row['name']}?", sql, str(row[column]), _VALUES[column]
    if kind == "top":
        ((where, words, test),) = _filters(row, rng, 1)
        high = rng.random() < 0.5
        pick = (max if high else min)((r for r in rows if test(r)), key=lambda r: r["salary"])
        order = "DESC" if high else "ASC"
        sql = f"SELECT name, salary FROM {TABLE} WHERE {where} ORDER BY salary {order} LIMIT 1"
        text = f"Who is the {'highest' if high else 'lowest'}-paid employee {words}?"
        return sql, text, sql, pick["name"], "name"
    filters = _filters(row, rng, rng.randint(1, 3) if kind == "count" else rng.randint(1, 2))
    where = " AND ".join(f[0] for f in filters)
    words = " ".join(f[1] for f in filters)
    chosen = [r for r in rows if all(f[2](r) for f in filters)]
    if kind == "count":
        sql = f"SELECT COUNT(*) FROM {TABLE} WHERE {where}"
        return sql, f"How many employees {words} are there?", sql, str(len(chosen)), "number"
    sql = f"SELECT SUM(salary) FROM {TABLE} WHERE {where}"
    total = str(sum(r["salary"] for r in chosen))
    return sql, f"What is the total salary of the employees {words}?", sql, total, "number"


@TASKS.register("table")
class TableTask(Task):
    name = "table"
    reward = "exact"
    defaults: ClassVar[dict[str, Any]] = {"rows": 200, "kinds": ",".join(KINDS)}
    description = "questions over a generated table of employees, answered with the read-only `sql` tool"

    def check(self, opts: dict[str, Any]) -> None:
        require(
            20 <= opts["rows"] <= 1200, self.name, f"rows must be between 20 and 1200, got {opts['rows']}"
        )
        kinds = opts["kinds"].split(",")
        unknown = [k for k in kinds if k not in KINDS]
        require(
            not unknown and bool(kinds), self.name, f"kinds must be some of {','.join(KINDS)}, got {unknown}"
        )

    def generate(self, n: int, seed: int = 0, split: str = "train", **options: Any) -> list[dict]:
        opts = self.options(options)
        self._rows = table_rows(seed, opts["rows"])
        with tempfile.TemporaryDirectory(prefix="r1lab-table-") as tmp:
            self._box = sql_toolbox(write_table(Path(tmp) / f"{TABLE}.jsonl", seed, opts["rows"]))
        return super().generate(n, seed, split, **options)

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        kind = rng.choice(opts["kinds"].split(","))
        key, text, query, answer, what = question(kind, self._rows, rng)
        prompt = (
            f"{text} The answer is in the table `{TABLE}`, which you can query with the `sql` tool; it is not "
            f"common knowledge. {format_instruction(what)}"
        )
        return key, {"prompt": prompt, "answer": answer, "kind": kind, "query": query}

    def solve(self, record: dict) -> str:
        from r1lab.tools import ToolCall

        call = ToolCall("sql", {"query": record["query"]}, "")
        result = self._box.run(call)
        lines = result.content.splitlines()
        if result.error or len(lines) != 2 or lines[1].split(" | ")[0] != record["answer"]:
            raise RuntimeError(
                f"table: {record['query']!r} did not return {record['answer']!r}: {result.content}"
            )
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": record["prompt"]},
            {
                "role": "assistant",
                "content": f"I will query the {TABLE} table.\n{tool_call_text('sql', call.arguments)}",
            },
            {"role": "tool", "name": "sql", "content": result.content},
            {
                "role": "assistant",
                "content": f"The query returns {lines[1]}.\n{ANSWER_PREFIX} {record['answer']}",
            },
        ]
        record["messages"] = messages
        record["tools"] = self._box.schemas()
        return flatten(messages)
