"""The tool-use tasks `lookup` and `code`: seeded and split like the single-turn tasks, demonstrations that are
true (their tool results are what the real tools return), gold answers that score 1.0 and wrong ones that do not."""

from __future__ import annotations

import json
import random

import pytest

from r1lab.config import DataConfig, RewardSpec
from r1lab.data.sft import build_sft_dataset
from r1lab.data.tokenize import IGNORE
from r1lab.errors import UserError
from r1lab.rewards import load_reward
from r1lab.rewards.code import extract_code
from r1lab.sandbox import sandbox_problem
from r1lab.tasks import extract_answer, get_task
from r1lab.tasks.code_task import _digits, function
from r1lab.tasks.lookup import lookup_corpus, write_lookup_corpus
from r1lab.tasks.tool_turns import flatten
from r1lab.tools import build_toolbox, parse_tool_calls

MISSING = sandbox_problem()
needs_sandbox = pytest.mark.skipif(MISSING is not None, reason=f"sandbox unavailable: {MISSING}")
SMALL = {"people": 120, "companies": 12, "cities": 8, "countries": 3}  # a small world: fast to index


@pytest.fixture(scope="module")
def lookup_train():
    return get_task("lookup").generate(30, seed=1, split="train", **SMALL)


@pytest.fixture(scope="module")
def code_train():
    return get_task("code").generate(120, seed=0, split="train", fix_rate=0.5)


def assistant_calls(record: dict) -> list[list]:
    return [parse_tool_calls(m["content"]) for m in record["messages"] if m["role"] == "assistant"]


@pytest.mark.parametrize(("name", "options"), [("lookup", SMALL), ("code", {})])
def test_generation_is_seeded_and_splits_are_disjoint(name, options):
    task = get_task(name)
    first = task.generate(20, seed=3, **options)
    assert first == task.generate(20, seed=3, **options)
    assert first != task.generate(20, seed=4, **options)
    # a problem is its question (lookup) or its function (code: the gold solution fixes the template's knobs)
    column = "prompt" if name == "lookup" else "answer"
    train = {r[column] for r in task.generate(150, seed=3, **options)}
    test = {r[column] for r in task.generate(40, seed=3, split="test", **options)}
    assert train and test and not train & test


def test_lookup_corpus_depends_on_the_seed_only(tmp_path):
    assert lookup_corpus(1, **SMALL) == lookup_corpus(1, **{**SMALL, "hops": 3})
    assert lookup_corpus(1, **SMALL) != lookup_corpus(2, **SMALL)
    docs = lookup_corpus(1, **SMALL)
    assert len(docs) == sum(SMALL.values()) and len({d["id"] for d in docs}) == len(docs)
    assert len({d["title"] for d in docs}) == len(docs)  # every entity has its own name
    rows = write_lookup_corpus(tmp_path / "c.jsonl", 1, **SMALL).read_text().splitlines()
    assert [json.loads(r) for r in rows] == docs


def test_lookup_demonstrations_are_what_search_returns(lookup_train, tmp_path):
    test = get_task("lookup").generate(10, seed=1, split="test", **SMALL)
    box = build_toolbox(
        [{"name": "search", "corpus": str(write_lookup_corpus(tmp_path / "c.jsonl", 1, **SMALL))}]
    )
    docs = {d["id"]: d for d in lookup_corpus(1, **SMALL)}
    for record in lookup_train + test:  # held-out questions are answered from the same corpus
        messages = record["messages"]
        assert messages[0] == {"role": "user", "content": record["prompt"]}
        assert [m["role"] for m in messages[1:]] == ["assistant", "tool"] * record["hops"] + ["assistant"]
        calls = assistant_calls(record)
        assert [len(c) for c in calls] == [1] * record["hops"] + [0]  # one search per hop, none in the answer
        results = [m["content"] for m in messages if m["role"] == "tool"]
        for (call,), result, doc_id in zip(calls[:-1], results, record["evidence"], strict=True):
            assert call.error is None and call.name == "search"
            assert box.run(call).content == result  # the real tool on the written corpus, re-run
            assert f"(id {doc_id})" in result and docs[doc_id]["text"] in result  # the fact used is shown
        assert record["answer"] in docs[record["evidence"][-1]]["text"]  # the last document states the answer
        assert record["completion"] == flatten(messages)
        assert extract_answer(record["completion"]) == record["answer"]
        assert messages[-1]["content"].endswith(f"Answer: {record['answer']}")


def test_lookup_hops_and_the_chain_of_facts(lookup_train):
    docs = {d["id"]: d["text"] for d in lookup_corpus(1, **SMALL)}
    record = next(r for r in lookup_train if r["relations"] == ["employer", "headquarters"])
    person, company = (docs[i] for i in record["evidence"])
    employer = person.split(" works at ")[1].split(" and was born")[0]
    assert company.startswith(f"{employer} is a ")
    assert company.endswith(f"Its headquarters are in {record['answer']}.")
    three = get_task("lookup").generate(5, seed=1, hops=3, **SMALL)
    assert {r["hops"] for r in three} == {3} and all(len(r["evidence"]) == 3 for r in three)
    with pytest.raises(UserError, match="hops must be 1, 2 or 3"):
        get_task("lookup").generate(5, hops=4)


def test_lookup_reward_exact_match(lookup_train):
    reward = load_reward(RewardSpec(name=get_task("lookup").reward))
    for record in lookup_train[:5]:
        assert reward(record["completion"], prompt=record["prompt"], answer=record["answer"]) == 1.0
        other = next(r["answer"] for r in lookup_train if r["answer"] != record["answer"])
        wrong = record["completion"].replace(f"Answer: {record['answer']}", f"Answer: {other}")
        assert reward(wrong, prompt=record["prompt"], answer=record["answer"]) == 0.0


def test_code_records_and_demonstrations(code_train):
    assert {r["template"] for r in code_train} == {
        "digits",
        "filter",
        "between",
        "swap",
        "caesar",
        "multiples",
        "words",
    }
    fixed = 0
    for record in code_train:
        calls = assistant_calls(record)
        assert calls[-1] == [] and all(len(c) == 1 and c[0].name == "python" for c in calls[:-1])
        assert len(calls) in (2, 3)  # run, or run + fix and run again; then the final code
        fixed += len(calls) == 3
        assert extract_code(record["completion"]).strip() == record["answer"]
        assert record["messages"][-1]["content"].endswith(f"```python\n{record['answer']}\n```")
        assert len(record["tests"]) == 5 and all(t.startswith("assert ") for t in record["tests"])
        example = record["prompt"].split("For example, `")[1].split("`")[0]
        assert all(f"assert {example} ==" not in t for t in record["tests"])  # the example is not a test
        # the last run is the gold solution on the example and prints what the prompt says it returns
        last_code = calls[-2][0].arguments["code"]
        assert last_code == f"{record['answer']}\n\nprint(repr({example}))"
        tool = [m["content"] for m in record["messages"] if m["role"] == "tool"]
        assert f"returns `{tool[-1]}`" in record["prompt"]
        if len(calls) == 3:
            assert tool[0] != tool[1]  # the first version was wrong on the example
    assert 0 < fixed < len(code_train)
    with pytest.raises(UserError, match=r"fix_rate must be in \[0, 1\]"):
        get_task("code").generate(5, fix_rate=1.5)
    assert all(len(c) == 2 for c in map(assistant_calls, get_task("code").generate(20, fix_rate=0.0)))


def test_digit_sum_problem_by_hand():
    spec = next(s for s in map(_digits, map(random.Random, range(2000))) if s.key == "digits:sum:>:4")
    assert spec.name == "digit_sum" and "greater than 4" in spec.returns
    assert function(spec.gold, "digit_sum")(5827) == 5 + 8 + 7  # the digits greater than 4
    assert function(spec.gold, "digit_sum")(1234) == 0
    assert function(spec.buggy, "digit_sum")(4445) == 4 + 4 + 4 + 5  # the bug: 4 counts


def passes(code: str, name: str, test: str) -> bool:
    namespace: dict = {}
    exec(code, namespace)  # the templates' own code (gold and buggy versions), in this process
    try:
        exec(test, namespace)
    except AssertionError:
        return False
    return True


def test_gold_passes_its_hidden_tests_and_the_buggy_version_fails_some(code_train):
    for record in code_train:
        name = record["answer"].split("(")[0].removeprefix("def ")
        assert all(passes(record["answer"], name, t) for t in record["tests"])
        first = assistant_calls(record)[0][0].arguments["code"].rsplit("\n\nprint(", 1)[0]
        if first != record["answer"]:
            assert not all(passes(first, name, t) for t in record["tests"])


@needs_sandbox
def test_in_the_sandbox_gold_scores_1_and_the_tool_prints_the_demonstrated_outputs(code_train):
    """Few sandbox runs (each takes a while on a busy machine): one demonstration that fixes its first version."""
    reward = load_reward(RewardSpec(name=get_task("code").reward))
    record = next(r for r in code_train if len(assistant_calls(r)) == 3 and r["template"] == "filter")
    assert reward(record["completion"], prompt=record["prompt"], tests=record["tests"]) == 1.0
    calls = assistant_calls(record)
    first = calls[0][0].arguments["code"].rsplit("\n\nprint(", 1)[0]
    assert 0.0 <= reward(f"```python\n{first}\n```", prompt=record["prompt"], tests=record["tests"]) < 1.0
    box = build_toolbox(["python"])
    results = [m["content"] for m in record["messages"] if m["role"] == "tool"]
    for (call,), result in zip(calls[:-1], results, strict=True):
        assert box.run(call).content == result


def test_sft_reads_the_messages_with_tool_turns(lookup_train, tmp_path, tiny_tokenizer):
    """SFT picks the `messages` column: the assistant turns are the targets, the tool results are not."""
    path = tmp_path / "lookup.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lookup_train[:3]))
    data = build_sft_dataset(DataConfig(path=str(path), max_length=4096, shuffle=False), tiny_tokenizer)
    assert data.stats["kept"] == 3
    record, example = lookup_train[0], data[0]
    pairs = zip(example["input_ids"], example["labels"], strict=True)
    target = tiny_tokenizer.decode([t for t, label in pairs if label != IGNORE])
    for m in record["messages"]:
        if m["role"] == "assistant":
            assert m["content"] in target
        elif m["role"] == "tool":
            assert m["content"] not in target
