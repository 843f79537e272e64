"""`eval.suites` (forgetting): a tiny recipe with a task suite, a user-file suite and a perplexity suite writes
per-suite results at every eval point on the same problems; an experiment (2 arms x 2 seeds) reports each
suite's paired Δ vs the baseline (checked by hand); bad suites fail before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from r1lab.config import RecipeConfig
from r1lab.data import build_sft_dataset
from r1lab.errors import UserError
from r1lab.eval.suites import document_nll, perplexity_data
from r1lab.experiments.engine import run_experiment
from r1lab.experiments.stats import bootstrap_means, compare_to_baseline
from r1lab.models import load_model
from r1lab.pipeline import eval_config, load_recipe, run_recipe, write_task_files

SFT = {"name": "sft", "kind": "sft", "optim": {"lr": 1e-3}, "train": {"max_steps": 2, "batch_size": 8}}
CHAT = [
    {"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w} {w} ok."}]}
    for w in ("hello", "fox", "dog", "answer is 19", "sort the words")
]
# an eval reward whose verdict depends only on the gold answer: the same for every model (a known accuracy)
EVEN_GOLD = "def even_gold(completion, *, answer, **_):\n    return 1.0 if int(answer) % 2 == 0 else 0.0\n"


def write_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"{i} + 1 = ?", "answer": str(i + 1)}) + "\n" for i in range(6))
    )
    reward = tmp_path / "even_gold.py"
    reward.write_text(EVEN_GOLD)
    return chat, prompts, reward


def suites(tmp_path: Path) -> list[dict]:
    chat, prompts, reward = write_files(tmp_path)
    return [
        {"name": "mult", "task": "multiplication", "test_size": 4},
        {"name": "mine", "data": str(prompts), "rewards": [{"name": f"{reward}:even_gold"}]},
        {"name": "chat", "perplexity": str(chat)},
    ]


def write_recipe(tmp_path: Path, model_dir: Path, **changes) -> Path:
    data = {
        "name": "tiny-suites",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(model_dir)},
        "task": {"name": "addition", "train_size": 16, "test_size": 4, "options": {"digits": 1}},
        "eval": {"max_new_tokens": 6, "batch_size": 8, "suites": suites(tmp_path)},
        "stages": [SFT],
    } | changes
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_recipe_writes_every_suite_at_every_eval_point(tmp_path, tiny_model_dir):
    root = run_recipe(write_recipe(tmp_path, tiny_model_dir))
    task_files = sorted(p.name for p in (root / "data").glob("suite-*.jsonl"))
    assert len(task_files) == 1 and task_files[0].startswith("suite-mult-")  # written once, keyed
    prompts = {}
    for label in ("base", "sft"):
        folder = root / "eval" / label
        main = json.loads((folder / "results.json").read_text())
        assert list(main["suites"]) == ["mult", "mine", "chat"]
        for name in ("mult", "mine", "chat"):
            own = json.loads((folder / "suites" / name / "results.json").read_text())
            assert own == main["suites"][name]
            assert (folder / "suites" / name / "results.md").is_file()
        assert main["suites"]["mult"]["num_problems"] == 4
        assert main["suites"]["mine"]["accuracy"] == pytest.approx(3 / 6)  # answers 2, 4, 6 are even
        chat = main["suites"]["chat"]
        assert chat["kind"] == "perplexity" and chat["num_documents"] == 5
        assert chat["ppl"] == pytest.approx(np.exp(chat["mean_nll"]))
        prompts[label] = [r["prompt"] for r in read(folder / "suites" / "mult" / "samples.jsonl")]
        assert "## Suite `chat`" in (folder / "results.md").read_text()
    assert prompts["base"] == prompts["sft"]  # the same problems at every eval point
    summary = (root / "results.md").read_text()
    for name in ("mult", "mine", "chat"):
        assert f"## Suite `{name}`" in summary
    assert (
        "| base |" in summary.split("## Suite `chat`")[1] and "| sft |" in summary.split("## Suite `chat`")[1]
    )


def test_document_nll_is_the_unbatched_hand_sum(tmp_path, tiny_model_dir):
    write_files(tmp_path)
    recipe = load_recipe(write_recipe(tmp_path, tiny_model_dir))
    evaluation = eval_config(recipe, write_task_files(recipe, tmp_path / "run"), tmp_path / "run")
    suite = evaluation.suites[2]
    model, tokenizer = load_model(recipe.model, trainable=False)
    examples = build_sft_dataset(perplexity_data(suite), tokenizer)
    rows = document_nll(model, examples, tokenizer.pad_token_id, batch_size=3)  # right-padded batches
    for row, example in zip(rows, examples, strict=True):
        ids, labels = torch.tensor([example["input_ids"]]), torch.tensor(example["labels"][1:])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        keep = labels != -100
        assert row["tokens"] == int(keep.sum())
        assert row["nll"] == pytest.approx(-logp[keep, labels[keep]].sum().item(), rel=1e-4)


def test_experiment_reports_each_suites_paired_delta(tmp_path, tiny_model_dir):
    experiment = {
        "arms": [
            {"label": "slow", "stages": ["sft"]},
            {"label": "fast", "stages": ["sft"], "overrides": {"sft.optim.lr": 2e-2}},
        ],
        "baseline": "slow",
        "seeds": [0, 1],
    }
    path = write_recipe(tmp_path, tiny_model_dir, experiment=experiment)
    root = run_experiment(load_recipe(path), path)
    state = json.loads((root / "pipeline.json").read_text())
    eval_dirs = {a["label"]: [Path(r["eval_dir"]) for r in a["runs"]] for a in state["experiment"]["arms"]}

    # by hand: per seed, the token-weighted mean NLL of each arm on the same documents; Δ = mean over seeds
    def mean_nll(folder: Path) -> tuple[float, list[int]]:
        rows = read(folder / "suites" / "chat" / "samples.jsonl")
        return sum(r["nll"] for r in rows) / sum(r["tokens"] for r in rows), [r["tokens"] for r in rows]

    per_seed = []
    for fast, slow in zip(eval_dirs["fast"], eval_dirs["slow"], strict=True):
        (a, tokens_a), (b, tokens_b) = mean_nll(fast), mean_nll(slow)
        assert tokens_a == tokens_b  # the same documents
        per_seed.append(a - b)
    delta = sum(per_seed) / 2
    assert delta != 0
    report = (root / "results.md").read_text()
    summary = report.split("## Target gain and change on the other suites (Δ vs slow)")[1].split("## ")[0]
    assert "| arm | target Δ (pts) | target Δ 95% | mult Δ (pts) | mult Δ 95% | mine Δ (pts)" in summary
    assert "chat Δ NLL" in summary
    fast_row = next(line for line in summary.splitlines() if line.startswith("| fast |"))
    assert f"| {delta:+.4f} |" in fast_row
    assert "| +0.0 | [+0.0, +0.0] |" in fast_row  # mine (even_gold): the same verdicts for both arms
    assert "| slow | (baseline) |" in summary
    chat_section = report.split("## Suite `chat` (perplexity:")[1].split("## ")[0]
    assert f"| {np.exp(delta):.3f} |" in chat_section  # ppl ×


def test_weighted_paired_bootstrap_is_the_token_weighted_difference():
    nll = {"b": {0: np.array([1.0, 2.0, 4.0])}, "a": {0: np.array([1.0, 1.0, 1.0])}}
    tokens = np.array([1.0, 1.0, 2.0])
    d = compare_to_baseline(nll, "b", resamples=2000, weights=tokens)["a"]
    assert d.diff == pytest.approx((0 * 1 + -1 * 1 + -3 * 2) / 4)  # -1.75 nats per token
    assert d.per_seed[0][1:3] == (2, 0)  # lower on two documents, higher on none
    assert d.interval[0] <= d.diff <= d.interval[1] and d.interval[1] <= 0
    draws = bootstrap_means(np.array([[2.0, 4.0]]), resamples=50, weights=np.array([1.0, 3.0]))
    assert set(np.round(draws, 6)) <= {2.0, 4.0, 3.5}  # a weighted mean of the drawn documents


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ({"name": "x", "task": "addition", "colour": 1}, "unknown key"),
        ({"name": "x", "task": "nosuchtask"}, "unknown task 'nosuchtask'"),
        ({"name": "x", "task": "addition", "options": {"digitz": 2}}, "has no option 'digitz'"),
        ({"name": "x", "perplexity": "missing.jsonl"}, "no file 'missing.jsonl'"),
        ({"name": "x", "data": "missing.jsonl", "rewards": [{"name": "math"}]}, "no file 'missing.jsonl'"),
        ({"name": "x", "data": "mine.jsonl"}, "needs `task`, `data` with `rewards`, or `perplexity`"),
        ({"name": "x", "perplexity": "chat.jsonl", "task": "addition"}, "`perplexity` takes no task"),
        ({"name": "a b", "task": "addition"}, "use letters, digits"),
        ({"name": "x", "perplexity": "mine.jsonl"}, "SFT trains on conversations"),
    ],
)
def test_bad_suites_fail_before_anything_trains(tmp_path, monkeypatch, suite, message):
    write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    recipe = RecipeConfig(
        name="t",
        output_dir=str(tmp_path / "run"),
        model={"path": "tiny"},
        task={"name": "addition", "train_size": 4, "test_size": 2},
        eval={"suites": [suite]},
        stages=[SFT],
    )
    with pytest.raises(UserError, match=message) as e:
        eval_config(recipe, write_task_files(recipe, tmp_path / "run"), tmp_path / "run")
    assert "eval.suites" in e.value.render() or "recipe: eval" in e.value.render()
    assert not (tmp_path / "run" / "sft").exists()


def test_two_suites_with_one_name_are_refused(tmp_path):
    recipe = RecipeConfig(
        name="t",
        output_dir=str(tmp_path / "run"),
        task={"name": "addition", "train_size": 4, "test_size": 2},
        eval={"suites": [{"name": "x", "task": "addition"}, {"name": "x", "task": "countdown"}]},
        stages=[SFT],
    )
    with pytest.raises(UserError, match="suite names must be unique; used twice: x"):
        eval_config(recipe, write_task_files(recipe, tmp_path / "run"), tmp_path / "run")


def fake_eval(folder: Path, main: list[int], suite: list[int]) -> str:
    """An evaluation folder with known greedy correctness on the main set and on suite `other`."""
    for where, correct in ((folder, main), (folder / "suites" / "other", suite)):
        where.mkdir(parents=True)
        rows = [{"problem": i, "kind": "greedy", "prompt": f"q{i}", "completion": "a", "correct": bool(c)}
                for i, c in enumerate(correct)]  # fmt: skip
        (where / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"accuracy": sum(main) / len(main), "accuracy_ci95": [0, 1], "num_problems": len(main)}
    other = {"accuracy": sum(suite) / len(suite), "num_problems": len(suite), "source": "other.jsonl"}
    (folder / "results.json").write_text(json.dumps({**results, "suites": {"other": other}}))
    return str(folder)


def test_accuracy_suite_delta_vs_an_untrained_baseline_is_the_hand_computed_one(tmp_path):
    from r1lab.experiments.report import write_experiment_report

    base = [{"seed": None, "chain": [], "eval_dir": fake_eval(tmp_path / "base", [0] * 4, [1, 1, 1, 0])}]
    runs = [
        {"seed": 0, "chain": [], "eval_dir": fake_eval(tmp_path / "a0", [1, 1, 0, 0], [1, 0, 0, 0])},
        {"seed": 1, "chain": [], "eval_dir": fake_eval(tmp_path / "a1", [1, 0, 0, 0], [1, 1, 0, 0])},
    ]
    arms = [
        {"label": "base", "stages": [], "sweep": None, "runs": base},
        {"label": "A", "stages": ["sft"], "sweep": None, "runs": runs},
    ]
    state = {"experiment": {"name": "toy", "baseline": "base", "seeds": [0, 1], "arms": arms}}
    (tmp_path / "pipeline.json").write_text(json.dumps(state))
    report = write_experiment_report(tmp_path).read_text()
    # target: +50 and +25 points -> +37.5; other: 25% - 75% and 50% - 75% -> -50 and -25 -> -37.5 points
    summary = report.split("## Target gain")[1].split("## ")[0]
    row = next(line for line in summary.splitlines() if line.startswith("| A |")).split(" | ")
    assert row[1] == "+37.5" and row[3] == "-37.5"
    section = report.split("## Suite `other` (accuracy: other.jsonl)")[1].split("## ")[0]
    a = next(line for line in section.splitlines() if line.startswith("| A |")).split(" | ")
    assert a[1:3] == ["2", "37.5"] and a[4] == "-37.5"  # seeds, accuracy (25% and 50%), Δ
    # the bootstrap p with two seeds; the same matrices through the stats layer give the same numbers
    z = compare_to_baseline({"base": {None: np.array([1.0, 1, 1, 0])}, "A": {0: np.array([1.0, 0, 0, 0]), 1: np.array([1.0, 1, 0, 0])}}, "base")["A"]  # fmt: skip
    assert a[5] == f"[{100 * z.interval[0]:+.1f}, {100 * z.interval[1]:+.1f}]"
    assert z.per_seed[0][1:3] == (0, 2)  # seed 0: it loses problems 1 and 2 and solves none the base does not
    page = (tmp_path / "report.html").read_text()
    assert "Suite `other` (accuracy: other.jsonl)</h2>" in page and "Target gain and change" in page


def test_run_eval_without_a_run_folder_generates_a_task_suite_as_configured(tmp_path, tiny_model_dir):
    from r1lab.config import EvalConfig
    from r1lab.eval import run_eval

    cfg = EvalConfig(
        task="addition",
        limit=2,
        max_new_tokens=4,
        suites=[{"name": "m", "task": "multiplication", "test_size": 3}],
    )
    results = run_eval(str(tiny_model_dir), cfg, tmp_path / "out")
    assert results["suites"]["m"]["num_problems"] == 3  # its test_size, not the eval's limit
    assert len(read(tmp_path / "out" / "suites" / "m" / "samples.jsonl")) == 3


def test_an_eval_without_suites_keeps_its_experiment_key():
    from r1lab.config import EvalConfig
    from r1lab.experiments.plan import fingerprint

    dumped = EvalConfig(task="addition").model_dump(mode="json")
    assert "suites" not in fingerprint(dumped)
    assert fingerprint({**dumped, "suites": [{"name": "x"}]})["suites"] == [{"name": "x"}]


def test_jobs_evaluate_the_suites_in_their_own_processes(tmp_path, tiny_model_dir):
    experiment = {"arms": [{"label": "base", "stages": []}, {"label": "sft", "stages": ["sft"]}]}
    path = write_recipe(tmp_path, tiny_model_dir, experiment=experiment)
    root = run_experiment(load_recipe(path), path, jobs=2)  # evaluations: python -m r1lab.experiments.jobs
    for folder in (root / "evals").iterdir():
        assert (folder / "request.json").is_file()
        assert sorted(p.name for p in (folder / "suites").iterdir()) == ["chat", "mine", "mult"]
    assert "## Suite `chat` (perplexity:" in (root / "results.md").read_text()


def test_a_suite_added_to_a_finished_recipe_evaluates_again(tmp_path, tiny_model_dir):
    first = write_recipe(tmp_path, tiny_model_dir)
    data = yaml.safe_load(first.read_text())
    data["eval"]["suites"] = data["eval"]["suites"][1:2]  # only `mine`
    first.write_text(yaml.safe_dump(data))
    root = run_recipe(first)
    assert list(json.loads((root / "eval" / "sft" / "results.json").read_text())["suites"]) == ["mine"]
    run_recipe(write_recipe(tmp_path, tiny_model_dir))  # all three: every eval point again, nothing trains
    state = json.loads((root / "pipeline.json").read_text())
    assert all(list(state["evals"][label]["suites"]) == ["mult", "mine", "chat"] for label in ("base", "sft"))
