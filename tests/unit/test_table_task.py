"""The `sql` tool on a hand-written table (results, read-only, limits, bad files) and the `table` task: seeded,
disjoint splits, gold answers that the tool's output and a Python count agree on, demonstrations that score 1
under the task's reward and render as SFT tool rows exactly as the rollout renders them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from r1lab.config import DataConfig
from r1lab.data import build_sft_dataset
from r1lab.errors import UserError
from r1lab.rewards import REWARDS
from r1lab.tasks import TASKS, get_task, split_of
from r1lab.tasks.table import TABLE, sql_toolbox, table_rows, write_table
from r1lab.tools import ToolCall, build_toolbox, render_with_tools
from r1lab.tools.table import Table

STAFF = [
    {"name": "Ann", "city": "Oslo", "salary": 300, "bonus": None},
    {"name": "Bob", "city": "Oslo", "salary": 500, "bonus": 1.5},
    {"name": "Cid", "city": "Rome", "salary": 400, "bonus": None},
]


@pytest.fixture
def staff(tmp_path):
    path = tmp_path / "staff.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in STAFF))
    return path


def sql(box, query: str):
    return box.run(ToolCall("sql", {"query": query}, ""))


def test_sql_tool_answers_queries_on_a_known_table(staff):
    box = build_toolbox([{"name": "sql", "table": str(staff)}])
    assert box.schemas()[0]["function"]["description"].startswith(
        "Run a read-only SQL query (SQLite) on the table `staff` with columns name, city, salary, bonus;"
    )
    assert sql(box, "SELECT SUM(salary) FROM staff WHERE city = 'Oslo'").content == "SUM(salary)\n800"
    assert sql(box, "SELECT name, bonus FROM staff ORDER BY salary").content == (
        "name | bonus\nAnn | NULL\nCid | NULL\nBob | 1.5"
    )
    assert sql(box, "SELECT name FROM staff WHERE salary > 999").content == "name\n(no rows)"
    few = Table(staff, max_rows=2)
    assert few.sql("SELECT name FROM staff") == "name\nAnn\nBob\n[1 more rows]"
    named = build_toolbox([{"name": "sql", "table": str(staff), "table_name": "people"}])
    assert sql(named, "SELECT COUNT(*) FROM people").content == "COUNT(*)\n3"


@pytest.mark.parametrize(
    "query",
    [
        "DROP TABLE staff",
        "DELETE FROM staff",
        "UPDATE staff SET salary = 0",
        "INSERT INTO staff VALUES ('Dan', 'Oslo', 1, NULL)",
        "CREATE TABLE t (x)",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA writable_schema = 1",
        "SELECT 1; DROP TABLE staff",
        "SELEC name FROM staff",
    ],
)
def test_sql_tool_only_reads_and_errors_come_back_as_text(staff, query):
    box = build_toolbox([{"name": "sql", "table": str(staff)}])
    result = sql(box, query)
    assert result.error and result.content.startswith("Error: sql failed: ValueError: SQL error:")
    assert sql(box, "SELECT COUNT(*), SUM(salary) FROM staff").content == "COUNT(*) | SUM(salary)\n3 | 1200"
    assert box.stats.errors == 1


def test_sql_tool_stops_a_runaway_query(staff):
    table = Table(staff, time_limit_s=0.2)
    with pytest.raises(ValueError, match="ran too long"):
        table.sql("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c")
    assert table.sql("SELECT COUNT(*) FROM staff") == "COUNT(*)\n3"  # the next query has its own time


def test_bad_table_files_and_specs_are_user_errors(tmp_path, staff):
    with pytest.raises(UserError, match="no table file"):
        build_toolbox([{"name": "sql", "table": str(tmp_path / "none.jsonl")}])
    with pytest.raises(UserError, match="needs a table"):
        build_toolbox(["sql"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n\n{"b": 2}\n')
    with pytest.raises(UserError, match="first record's keys") as e:
        build_toolbox([{"name": "sql", "table": str(bad)}])
    assert e.value.where == f"{bad}:3"
    bad.write_text('{"a": [1]}\n')
    with pytest.raises(UserError, match="not strings or numbers"):
        build_toolbox([{"name": "sql", "table": str(bad)}])
    with pytest.raises(UserError, match="not a plain SQL name"):
        build_toolbox([{"name": "sql", "table": str(staff), "table_name": "x; DROP"}])


def test_table_task_is_registered_seeded_and_its_splits_are_disjoint():
    task = get_task("table")
    assert "table" in TASKS.names() and task.reward == "exact"
    train = task.generate(300, seed=0, split="train")
    test = task.generate(100, seed=0, split="test")
    assert train == task.generate(300, seed=0, split="train")
    assert train != task.generate(300, seed=1, split="train")
    assert table_rows(0) == table_rows(0) != table_rows(1)
    assert not {r["query"] for r in train} & {r["query"] for r in test}
    assert {split_of(r["query"]) for r in test} == {"test"}
    assert set(Counter(r["kind"] for r in train)) == {"value", "count", "sum", "top"}
    assert {r["kind"] for r in task.generate(20, seed=0, kinds="top,sum")} == {"top", "sum"}
    names = [r["name"] for r in table_rows(0)]
    assert len(names) == len(set(names)) == 200


def test_gold_answers_agree_with_the_tool_and_the_demonstrations_score_one(tmp_path):
    task = get_task("table")
    records = task.generate(150, seed=3, split="train") + task.generate(50, seed=3, split="test")
    rows = table_rows(3)
    box = sql_toolbox(write_table(tmp_path / "employees.jsonl", seed=3))
    exact = REWARDS.get(task.reward)
    by_name = {r["name"]: r for r in rows}
    for record in records:
        _, first = sql(box, record["query"]).content.splitlines()
        assert first.split(" | ")[0] == record["answer"]
        if record["kind"] == "top":  # Python's max/min and SQL's ORDER BY agree: the salaries are distinct
            assert int(first.split(" | ")[1]) == by_name[record["answer"]]["salary"]
        assert record["completion"].endswith(f"Answer: {record['answer']}")
        assert exact(record["completion"], answer=record["answer"]) == 1.0
        assert exact("Answer: 12345678", answer=record["answer"]) == 0.0
        assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
        assert record["tools"] == box.schemas()
    # a hand-checked case on the known table: a count by department and city
    count = next(
        r for r in records if r["kind"] == "count" and " AND " not in r["query"] and "city" in r["query"]
    )
    city = count["query"].split("'")[1]
    assert count["answer"] == str(sum(r["city"] == city for r in rows))


def test_table_records_are_sft_tool_rows_rendered_as_the_rollout_renders_them(tmp_path, tiny_tokenizer):
    records = get_task("table").generate(3, seed=0, split="train")
    path = tmp_path / "table.jsonl"
    path.write_text(
        "".join(json.dumps({"messages": r["messages"], "tools": r["tools"]}) + "\n" for r in records)
    )
    examples = build_sft_dataset(DataConfig(path=str(path), max_length=8192), tiny_tokenizer)
    box = sql_toolbox(write_table(tmp_path / f"{TABLE}.jsonl", seed=0))
    for example, record in zip(examples, records, strict=True):
        text = tiny_tokenizer.decode(example["input_ids"], skip_special_tokens=False)
        assert text == render_with_tools(tiny_tokenizer, record["messages"], box, add_generation_prompt=False)
        trained = tiny_tokenizer.decode(
            [t for t in example["labels"] if t != -100], skip_special_tokens=False
        )
        assert trained == "<|im_end|>".join(
            m["content"] for m in record["messages"] if m["role"] == "assistant"
        ) + ("<|im_end|>")


def test_table_options_are_checked():
    with pytest.raises(UserError, match="rows must be between"):
        get_task("table").generate(5, rows=5)
    with pytest.raises(UserError, match="kinds must be some of"):
        get_task("table").generate(5, kinds="value,median")


def test_importing_the_tasks_and_tools_does_not_import_torch():
    """`r1lab data make` and the task registry stay light: r1lab.data (torch) is imported only when used."""
    import subprocess
    import sys

    code = "import sys, r1lab.tasks, r1lab.tools; print(sorted(m for m in ('torch', 'r1lab.data') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
