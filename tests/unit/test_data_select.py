"""`r1lab data select`: random (seeded), fit (GRAPE) against transformers' own loss, pass_rate's filter, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from rl_testkit import single_thread

import r1lab.stages.select as model_selectors
from r1lab.data.jsonl import write_jsonl
from r1lab.data.select import SelectOptions, select_file
from r1lab.errors import UserError


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_random_is_seeded_keeps_pool_order_and_refuses_k_above_the_pool(tmp_path) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": f"q{i}", "answer": str(i)} for i in range(20)])
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        summary = select_file(
            str(pool), "random", SelectOptions(k=5, source=str(pool), seed=seed), tmp_path / name
        )
        assert summary == {"method": "random", "pool": 20, "kept": 5, "out": str(tmp_path / name)}
        runs[name] = [int(r["answer"]) for r in read(tmp_path / name)]
    assert runs["a"] == runs["b"] != runs["c"]
    assert runs["a"] == sorted(runs["a"]) and len(set(runs["a"])) == 5
    with pytest.raises(UserError, match="--k 21 is more than the pool holds") as e:
        select_file(str(pool), "random", SelectOptions(k=21, source=str(pool)), tmp_path / "x")
    assert "has 20 records" in e.value.what and not (tmp_path / "x").exists()
    with pytest.raises(UserError, match="unknown selection method 'randm'") as e:
        select_file(str(pool), "randm", SelectOptions(k=1, source=str(pool)), tmp_path / "x")
    assert "did you mean 'random'" in (e.value.fix or "")


def hf_mean_logprob(model_dir: Path, record: dict) -> float:
    """The peer: -(transformers' own causal-LM loss) with labels on the assistant turn only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tok.apply_chat_template(record["messages"][:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(record["messages"], tokenize=False)
    ids = tok(full, add_special_tokens=False, return_tensors="pt").input_ids
    labels = ids.clone()
    labels[:, : len(tok(prompt, add_special_tokens=False).input_ids)] = -100
    labels[:, -1] = -100  # the template's trailing newline after <|im_end|> is not trained
    with torch.no_grad():
        return -model(input_ids=ids, labels=labels).loss.item()


def test_fit_keeps_per_instruction_the_likeliest_response(tmp_path, tiny_model_dir) -> None:
    questions = ["What is 2 + 2?", "Say hello.", "Name a colour."]
    answers = ["4", "The answer is 4.", "Hello! How are you?", "quick brown fox", "yes"]
    rows = [chat(q, a) for q in questions for a in answers]
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    peer = [hf_mean_logprob(tiny_model_dir, r) for r in rows]
    options = SelectOptions(k=2, source=str(pool), model=str(tiny_model_dir))
    assert select_file(str(pool), "fit", options, tmp_path / "out.jsonl")["kept"] == 2
    kept = read(tmp_path / "out.jsonl")
    best = {q: max(range(i * 5, i * 5 + 5), key=peer.__getitem__) for i, q in enumerate(questions)}
    top2 = sorted(best.values(), key=lambda j: -peer[j])[:2]
    assert [r["messages"] for r in kept] == [rows[j]["messages"] for j in sorted(top2)]
    for r, j in zip(kept, sorted(top2), strict=True):
        assert r["fit_logprob"] == pytest.approx(peer[j], abs=1e-5)
    with pytest.raises(UserError, match="more than the pool's 3 instructions"):
        select_file(
            str(pool), "fit", SelectOptions(k=4, source=str(pool), model=str(tiny_model_dir)), tmp_path / "x"
        )


def test_fit_needs_responses_and_a_model(tmp_path, tiny_model_dir) -> None:
    pool = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"q{i}"} for i in range(3)])
    with pytest.raises(UserError, match="--model"):
        select_file(str(pool), "fit", SelectOptions(k=1, source=str(pool)), tmp_path / "x")
    with pytest.raises(UserError, match=r"selection 'fit' scores candidate responses"):
        select_file(
            str(pool), "fit", SelectOptions(k=1, source=str(pool), model=str(tiny_model_dir)), tmp_path / "x"
        )


def test_pass_rate_drops_always_and_never_solved_and_keeps_those_nearest_half(tmp_path, monkeypatch) -> None:
    # 6 prompts with known rates over n = 4: 0, 1, 1/2, 1/4, 3/4, 1/2 -> candidates 2, 3, 4, 5; k = 3 keeps the
    # two at 1/2 and, of the tie at distance 1/4, the earlier one (prompt 3)
    solved = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 1], [0, 1, 1, 0]]

    def fake_generate(model, tokenizer, prompts, cfg, rewards):
        assert cfg.n == 4 and len(prompts) == 6
        rows = [{"problem": i, "kind": "greedy", "correct": bool(s[0])} for i, s in enumerate(solved)]
        return rows + [
            {"problem": i, "kind": "sample", "correct": bool(c)} for i, s in enumerate(solved) for c in s
        ]

    monkeypatch.setattr(model_selectors, "generate_and_score", fake_generate)
    monkeypatch.setattr(model_selectors, "load_model", lambda cfg, trainable: (None, None))
    monkeypatch.setattr(model_selectors, "load_tokenizer", lambda cfg: _tokenizer())
    pool = write_jsonl(
        tmp_path / "pool.jsonl", [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    )
    options = SelectOptions(k=3, source=str(pool), model="m", task="addition", n=4)
    assert select_file(str(pool), "pass_rate", options, tmp_path / "out.jsonl")["kept"] == 3
    kept = read(tmp_path / "out.jsonl")
    assert [(r["answer"], r["pass_rate"], r["pass_rate_n"]) for r in kept] == [
        ("4", 0.5, 4),
        ("6", 0.25, 4),
        ("10", 0.5, 4),
    ]
    assert [r["greedy_correct"] for r in kept] == [True, False, False]


def _tokenizer():
    import tempfile

    from tiny import build_tokenizer

    return build_tokenizer(Path(tempfile.mkdtemp()))


def write_parity_reward(tmp_path: Path) -> Path:
    file = tmp_path / "parity.py"
    file.write_text("def even(completion, **columns):\n    return 1.0 if len(completion) % 2 == 0 else 0.0\n")
    return file


def test_pass_rate_samples_with_the_tiny_model(tmp_path, tiny_model_dir) -> None:
    pool = write_jsonl(
        tmp_path / "pool.jsonl", [{"prompt": f"Write about {w}.", "answer": "x"} for w in "abcdefgh"]
    )
    reward = f"{write_parity_reward(tmp_path)}:even"
    options = SelectOptions(k=8, source=str(pool), model=str(tiny_model_dir), rewards=[reward], n=4,
                            max_new_tokens=6)  # fmt: skip
    select_file(str(pool), "pass_rate", options, tmp_path / "out.jsonl")
    kept = read(tmp_path / "out.jsonl")
    prompts = [r["prompt"] for r in read(pool)]
    assert [r["prompt"] for r in kept] == [p for p in prompts if p in {r["prompt"] for r in kept}]
    assert kept and all(r["pass_rate"] in (0.25, 0.5, 0.75) and r["pass_rate_n"] == 4 for r in kept)


def test_pass_rate_needs_gold_answers_for_its_reward(tmp_path, tiny_model_dir) -> None:
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": f"What is {i} + 1?"} for i in range(4)])
    options = SelectOptions(k=2, source=str(pool), model=str(tiny_model_dir), rewards=["math"], n=2)
    with pytest.raises(UserError, match="needs the column 'answer'"):
        select_file(str(pool), "pass_rate", options, tmp_path / "x")
    with pytest.raises(UserError, match="--reward / --task"):
        select_file(str(pool), "pass_rate", SelectOptions(k=2, source=str(pool), model="m"), tmp_path / "x")


def test_diversity_takes_evenly_from_the_clusters_of_the_models_embeddings(tmp_path, tiny_model_dir) -> None:
    sums = [
        f"What is {a} + {b}? {a} + {b} = {a + b}." for a, b in [(12, 7), (3, 4), (25, 9), (6, 6), (40, 2)]
    ]
    words = ["The quick brown fox jumps over the lazy dog."] * 3 + ["The lazy dog. The quick brown fox."] * 3
    rows = [chat(t, "ok") for t in sums] + [{"prompt": t, "completion": "ok"} for t in words]
    random.Random(1).shuffle(rows)
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    is_sum = ["What is" in (r["messages"][0]["content"] if "messages" in r else r["prompt"]) for r in rows]
    for k in (2, 4):
        for seed in (0, 1):
            options = SelectOptions(k=k, source=str(pool), model=str(tiny_model_dir), seed=seed)
            select_file(str(pool), "diversity", options, tmp_path / f"d{k}{seed}.jsonl")
        kept = [rows.index(r) for r in read(tmp_path / f"d{k}0.jsonl")]
        assert sorted(is_sum[i] for i in kept) == [False] * (k // 2) + [True] * (k // 2)  # evenly from both
    assert read(tmp_path / "d40.jsonl") != read(tmp_path / "d41.jsonl") or read(
        tmp_path / "d20.jsonl"
    ) != read(tmp_path / "d21.jsonl")
