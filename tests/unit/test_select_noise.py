"""A noisy pool from a task (known noise per row), the `curation` and `indicators` selectors, and select-report's
precision/recall at excluding the noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rl_testkit import single_thread
from typer.testing import CliRunner

from r1lab.data.jsonl import write_jsonl
from r1lab.data.select import SelectOptions, select_file
from r1lab.data.select_report import noise_report
from r1lab.errors import UserError
from r1lab.rewards import REWARDS
from r1lab.stages.noisy_pool import build_noisy_pool
from r1lab.tasks import get_task, has_answer_line

SHARES = {"wrong": 0.2, "truncated": 0.1, "near_duplicate": 0.1, "off_format": 0.1}


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def passes(row: dict) -> bool:
    return REWARDS.get("countdown")(row["completion"], numbers=row["numbers"], target=row["target"]) == 1.0


def make_pool(tmp_path: Path, size: int = 20, seed: int = 0, name: str = "pool") -> tuple[Path, Path]:
    pool, labels = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-labels.jsonl"
    build_noisy_pool("countdown", size, SHARES, pool, labels, seed=seed)
    return pool, labels


def test_noisy_pool_corrupts_the_shares_asked_and_labels_each_row(tmp_path) -> None:
    pool, labels = make_pool(tmp_path, size=40)
    rows, marks = read(pool), read(labels)
    gold = get_task("countdown").generate(40, seed=0, split="train")
    kinds = [m["noise"] for m in marks]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "clean": 20, "wrong": 8, "truncated": 4, "near_duplicate": 4, "off_format": 4,
    }  # fmt: skip
    assert [r["id"] for r in rows] == [m["id"] for m in marks] == [f"row-{i:05d}" for i in range(40)]
    by_id = {r["id"]: r for r in rows}
    for row, mark, original in zip(rows, marks, gold, strict=True):
        kind = mark["noise"]
        assert passes(row) == (kind in ("clean", "near_duplicate"))
        if kind == "clean":
            assert {k: v for k, v in row.items() if k != "id"} == original
        elif kind == "wrong":  # same steps, an answer line that fails
            assert row["completion"].splitlines()[:-1] == original["completion"].splitlines()[:-1]
            assert has_answer_line(row["completion"])
        elif kind == "truncated":
            assert original["completion"].startswith(row["completion"]) and not has_answer_line(
                row["completion"]
            )
        elif kind == "off_format":  # the gold answer is there, off the Answer: line
            assert original["answer"] in row["completion"].splitlines()[-1] and not has_answer_line(
                row["completion"]
            )
        else:  # one word of the prompt doubled, one space of the solution doubled: a copy of a clean row
            source = by_id[mark["of"]]
            assert marks[int(mark["of"][4:])]["noise"] == "clean"
            assert row["prompt"] != source["prompt"] and row["prompt"].split() != source["prompt"].split()
            assert len(row["prompt"].split()) == len(source["prompt"].split()) + 1
            assert row["completion"].split() == source["completion"].split()
            assert row["answer"] == source["answer"]
    again, other = (
        make_pool(tmp_path, size=40, name="again"),
        make_pool(tmp_path, size=40, seed=1, name="other"),
    )
    assert read(again[0]) == rows and read(again[1]) == marks and read(other[1]) != marks


def test_noisy_pool_refuses_shares_that_are_not_shares(tmp_path) -> None:
    for shares in ({"wrong": 0.7, "truncated": 0.4}, {"wrong": -0.1}, {"typos": 0.1}):
        with pytest.raises(UserError, match="are not shares of one pool"):
            build_noisy_pool("countdown", 10, shares, tmp_path / "p.jsonl", tmp_path / "l.jsonl")
    with pytest.raises(UserError, match="near-duplicates copy clean rows"):
        build_noisy_pool(
            "countdown", 10, {"near_duplicate": 0.5, "wrong": 0.5}, tmp_path / "p", tmp_path / "l"
        )
    with pytest.raises(UserError, match=r"row row-\d+ \(off_format\) passes the verifier") as e:
        build_noisy_pool("lookup", 10, {"off_format": 0.5}, tmp_path / "p.jsonl", tmp_path / "l.jsonl")
    assert "--off-format 0" in (e.value.fix or "")  # lookup's reward reads an answer off the Answer: line too
    with pytest.raises(UserError, match="the same file"):
        build_noisy_pool("countdown", 10, {}, tmp_path / "p.jsonl", tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()


def test_select_report_counts_the_noise_each_selection_excluded(tmp_path) -> None:
    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [{"id": i, "noise": n} for i, n in enumerate(["clean"] * 6 + ["wrong"] * 2 + ["truncated"] * 2)],
    )
    kept = write_jsonl(tmp_path / "kept.jsonl", [{"id": i} for i in [0, 1, 2, 3, 4, 9]])  # drops 5, 6, 7, 8
    (row,) = noise_report(str(labels), [str(kept)])
    assert (row["kept"], row["excluded"]) == (6, 4)
    assert row["precision"] == 3 / 4 and row["recall"] == 3 / 4  # 6, 7, 8 noisy of 5-8; 9 kept
    assert row["recall_by_kind"] == {"truncated": 0.5, "wrong": 1.0}
    stray = write_jsonl(tmp_path / "stray.jsonl", [{"id": 99}])
    with pytest.raises(UserError, match=r"does not know, e\.g\. '99'"):
        noise_report(str(labels), [str(stray)])
    with pytest.raises(UserError, match="record 1 has no `id`"):
        noise_report(str(labels), [str(write_jsonl(tmp_path / "n.jsonl", [{"x": 1}]))])


def test_curation_drops_what_the_verifier_fails_then_the_least_confident(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    from r1lab.config import DataConfig, ModelConfig
    from r1lab.data import read_sft_data, tokenize_conversation
    from r1lab.models import load_tokenizer
    from r1lab.stages.select import mean_logprob
    from r1lab.stages.select_signals import WHOLE

    pool, labels = make_pool(tmp_path, size=20)
    options = SelectOptions(k=12, source=str(pool), model=str(tiny_model_dir), task="countdown")
    select_file(str(pool), "curation", options, tmp_path / "cur.jsonl")
    kept = read(tmp_path / "cur.jsonl")
    assert all(r["curation_verified"] for r in kept)  # 12 pass (10 clean + 2 near-duplicates), 8 fail
    (row,) = noise_report(str(labels), [str(tmp_path / "cur.jsonl")])
    assert row["precision"] == 1.0
    assert row["recall_by_kind"] == {"near_duplicate": 0.0, "off_format": 1.0, "truncated": 1.0, "wrong": 1.0}
    # without a verifier: the K most confident by mean response log-prob (fit's score, checked against HF)
    select_file(str(pool), "curation", SelectOptions(k=5, source=str(pool), model=str(tiny_model_dir)),
                tmp_path / "conf.jsonl")  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    read_back = read_sft_data(DataConfig(path=str(pool), shuffle=False, max_length=WHOLE))
    scores = [mean_logprob(model, *tokenize_conversation(tokenizer, c.messages, c.first_target))
              for _, c in read_back.conversations]  # fmt: skip
    best = sorted(sorted(range(20), key=lambda j: -scores[j])[:5])
    conf = read(tmp_path / "conf.jsonl")
    assert [r["id"] for r in conf] == [f"row-{j:05d}" for j in best]
    assert [r["curation_logprob"] for r in conf] == pytest.approx([scores[j] for j in best], abs=1e-5)
    assert "curation_verified" not in conf[0]


def test_curation_and_indicators_refuse_bad_input(tmp_path, tiny_model_dir) -> None:
    no_gold = write_jsonl(
        tmp_path / "nogold.jsonl", [{"prompt": f"q{i}", "completion": "a"} for i in range(6)]
    )
    for method in ("curation", "indicators"):
        options = SelectOptions(k=2, source=str(no_gold), model=str(tiny_model_dir), task="countdown",
                                probe=str(no_gold), probe_size=6, neighbours=2)  # fmt: skip
        with pytest.raises(UserError, match=r"checks the given answers against gold ones.*'numbers'"):
            select_file(str(no_gold), method, options, tmp_path / "x")
        with pytest.raises(UserError, match="more than the pool holds"):
            select_file(str(no_gold), method, SelectOptions(k=7, source=str(no_gold)), tmp_path / "x")
        with pytest.raises(UserError, match="--model"):
            select_file(str(no_gold), method, SelectOptions(k=1, source=str(no_gold)), tmp_path / "x")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"q{i}"} for i in range(4)])
    with pytest.raises(UserError, match="selection 'curation' scores given responses"):
        select_file(
            str(prompts), "curation", SelectOptions(k=1, source=str(prompts), model="m"), tmp_path / "x"
        )
    base = SelectOptions(k=2, source=str(no_gold), model=str(tiny_model_dir))
    with pytest.raises(UserError, match="--probe"):
        select_file(str(no_gold), "indicators", base, tmp_path / "x")
    few = SelectOptions(k=2, source=str(no_gold), model=str(tiny_model_dir), probe=str(no_gold), probe_size=3)
    with pytest.raises(UserError, match="fits 3 indicators on 3 probed records"):
        select_file(str(no_gold), "indicators", few, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_indicators_rule_is_a_least_squares_fit_on_standardised_indicators() -> None:
    from r1lab.stages.select_indicators import fit_and_predict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)) * [10.0, 1.0, 0.1] + [100.0, 0.0, 5.0]
    y = 0.5 * x[:, 0] - 3.0 * x[:, 1] + 20.0 * x[:, 2] + 1.0  # exactly linear: recovered from 8 rows
    assert fit_and_predict(x[:8], y[:8], x) == pytest.approx(y, abs=1e-8)
    flat = np.c_[x[:, :2], np.ones(30)]  # a constant indicator is harmless
    assert fit_and_predict(flat[:8], y[:8] - 20.0 * x[:8, 2], flat) == pytest.approx(
        y - 20.0 * x[:, 2], abs=1e-8
    )


def test_indicators_targets_are_the_probe_loss_change_of_one_sgd_step(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    from r1lab.config import DataConfig, ModelConfig
    from r1lab.data import read_sft_data, tokenize_conversation
    from r1lab.models import load_model
    from r1lab.stages.select_indicators import probe_deltas
    from r1lab.stages.select_signals import WHOLE

    pool, _ = make_pool(tmp_path, size=12)
    probe = write_jsonl(tmp_path / "probe.jsonl", get_task("countdown").generate(4, seed=0, split="test"))
    model, tokenizer = load_model(ModelConfig(path=str(tiny_model_dir)), trainable=False)
    convs = [
        c for _, c in read_sft_data(DataConfig(path=str(pool), shuffle=False, max_length=WHOLE)).conversations
    ]
    probes = [
        c
        for _, c in read_sft_data(DataConfig(path=str(probe), shuffle=False, max_length=WHOLE)).conversations
    ]
    lr = 0.05
    deltas = probe_deltas(model, tokenizer, convs[:2], probes, lr)

    def hf_loss(m, conv) -> torch.Tensor:  # transformers' own causal-LM loss on the response tokens
        ids, labels = tokenize_conversation(tokenizer, conv.messages, conv.first_target)
        return m(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss

    for conv, delta in zip(convs[:2], deltas, strict=True):
        peer = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        with torch.no_grad():
            before = np.mean([hf_loss(peer, p).item() for p in probes])
        hf_loss(peer, conv).backward()
        with torch.no_grad():
            for p in peer.parameters():
                p -= lr * p.grad
            after = np.mean([hf_loss(peer, p).item() for p in probes])
        assert delta == pytest.approx(after - before, abs=1e-4) and delta != 0
    assert probe_deltas(model, tokenizer, convs[:1], probes, lr) == pytest.approx(
        deltas[:1], abs=1e-6
    )  # restored


def test_indicators_keeps_the_k_lowest_predicted_and_the_cli_reports_it(tmp_path, tiny_model_dir) -> None:
    from r1lab.cli import app

    runner = CliRunner()
    pool, labels = tmp_path / "pool.jsonl", tmp_path / "labels.jsonl"
    made = runner.invoke(app, ["data", "noisy-pool", "--task", "countdown", "--size", "16", "--out", str(pool),
                               "--labels", str(labels), "--seed", "3"])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "7 clean, 3 wrong, 2 truncated, 2 near_duplicate, 2 off_format" in " ".join(made.output.split())
    probe = write_jsonl(tmp_path / "probe.jsonl", get_task("countdown").generate(3, seed=0, split="test"))
    args = ["data", "select", str(pool), "--method", "indicators", "--k", "6", "--model", str(tiny_model_dir),
            "--probe", str(probe), "--probe-size", "8", "--neighbours", "3", "--task", "countdown",
            "--out", str(tmp_path / "ind.jsonl")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    kept = read(tmp_path / "ind.jsonl")
    assert len(kept) == 6 and [r["id"] for r in kept] == sorted(r["id"] for r in kept)
    assert set(kept[0]["indicators"]) == {"tokens", "log_ppl", "knn_distance", "verified"}
    assert all(r["indicators"]["tokens"] > 0 and r["indicators"]["knn_distance"] > 0 for r in kept)
    report = runner.invoke(app, ["data", "select-report", str(tmp_path / "ind.jsonl"), "--labels", str(labels),
                                 "--out", str(tmp_path / "report.json")])  # fmt: skip
    assert report.exit_code == 0, report.output
    (row,) = json.loads((tmp_path / "report.json").read_text())
    assert (row["kept"], row["excluded"]) == (6, 10) and set(row["recall_by_kind"]) == set(SHARES)
    # the 6 kept are the 6 lowest predictions of all 16 (the same seed probes the same records)
    result = runner.invoke(app, [*args[:6], "16", *args[7:-1], str(tmp_path / "all.jsonl")])
    assert result.exit_code == 0, result.output
    every = read(tmp_path / "all.jsonl")
    lowest = sorted(every, key=lambda r: (r["predicted_loss_delta"], r["id"]))[:6]
    assert [r["id"] for r in kept] == sorted(r["id"] for r in lowest)
    assert [r["predicted_loss_delta"] for r in kept] == [
        r["predicted_loss_delta"] for r in every if r["id"] in {k["id"] for k in kept}
    ]
