"""The DPO stage on the tiny model: learning a trivially learnable preference, accumulation equivalence, resume,
the cached reference against an on-line one, the shared-prompt forward against the plain one, config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from rl_testkit import single_thread
from safetensors.torch import load_file

from r1lab.algorithms.logprobs import token_logprobs
from r1lab.config import DPOConfig, apply_overrides, load_config, validate
from r1lab.data.preference import build_preference_dataset, read_preference_data
from r1lab.errors import UserError
from r1lab.stages.dpo import run_dpo
from r1lab.stages.dpo_forward import REFERENCE_FILE, pair_logps


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def write_pairs(path: Path, n: int = 16) -> Path:
    """Chosen answers the sum in words the tiny tokenizer knows; rejected is a fixed short refusal."""
    with path.open("w") as f:
        for i in range(n):
            a, b = i % 7 + 1, i % 5 + 2
            row = {
                "prompt": f"What is {a} + {b}?",
                "chosen": f"{a} + {b} = {a + b}. The answer is {a + b}." + " yes" * (i % 3),
                "rejected": "no" + " no" * (i % 4),
            }
            f.write(json.dumps(row) + "\n")
    return path


def make_cfg(tmp_path: Path, model_dir: Path, name: str, *overrides: str) -> DPOConfig:
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        write_pairs(data)
    base: dict[str, Any] = {
        "model": {"path": str(model_dir)},
        "data": {"path": str(data), "max_length": 96},
        "optim": {"lr": 1e-4, "warmup_steps": 1},
        "train": {"output_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 3},
    }
    return validate(DPOConfig, apply_overrides(base, list(overrides)))


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same(a: Path, b: Path, file: str, atol: float) -> None:
    x, y = load_file(a / file), load_file(b / file)
    assert x.keys() == y.keys()
    worst = max((x[k] - y[k]).abs().max().item() for k in x)
    assert worst <= atol, f"max parameter difference {worst:.3g} > {atol}"


def test_dpo_learns_a_trivial_preference(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "run", "train.max_steps=8", "optim.lr=3e-3", "beta=0.5")
    final = run_dpo(cfg)
    out = Path(cfg.train.output_dir)
    assert final == out / "final" and (final / "model.safetensors").is_file()
    assert (out / REFERENCE_FILE).is_file()
    metrics = rows(out)
    assert [r["step"] for r in metrics] == list(range(1, 9))
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "pairs_per_s"):
        assert key in metrics[0]
    first, last = metrics[0], metrics[-1]
    # step 1 is scored before any update: the policy is the reference, every implicit reward is 0
    assert first["loss"] == pytest.approx(0.6931471805599453, abs=1e-5) and first["rewards/accuracies"] == 0
    assert last["loss"] < first["loss"] - 0.1
    assert last["rewards/accuracies"] == 1.0 and last["rewards/margins"] > 0.2
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    assert load_config(DPOConfig, out / "config.yaml") == cfg  # the resolved config loads again as it is


def test_grad_accumulation_gives_the_large_batch_update(tmp_path, tiny_model_dir) -> None:
    big = run_dpo(make_cfg(tmp_path, tiny_model_dir, "big", "train.batch_size=4", "train.grad_accum=1"))
    small = run_dpo(make_cfg(tmp_path, tiny_model_dir, "acc", "train.batch_size=1", "train.grad_accum=4"))
    assert_same(big, small, "model.safetensors", atol=1e-6)
    init, trained = load_file(tiny_model_dir / "model.safetensors"), load_file(big / "model.safetensors")
    assert max((trained[k] - init[k]).abs().max().item() for k in init) > 2e-4  # it really trained


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_matches_straight_run(tmp_path, tiny_model_dir, lora) -> None:
    extra = ["model.lora.r=4", "model.lora.dropout=0.3", "optim.lr=1e-3"] if lora else []
    file = "adapter_model.safetensors" if lora else "model.safetensors"
    straight = run_dpo(make_cfg(tmp_path, tiny_model_dir, "straight", "train.max_steps=4", *extra))
    cfg = make_cfg(tmp_path, tiny_model_dir, "resumed", "train.max_steps=4", "train.save_every=2", *extra)
    run_dpo(cfg)
    out = Path(cfg.train.output_dir)
    shutil.rmtree(out / "checkpoints" / "step-4")  # as if the run had died after the step-2 checkpoint
    shutil.rmtree(out / "final")
    cached = (out / REFERENCE_FILE).stat().st_mtime_ns
    resumed = run_dpo(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto"})}))
    assert (out / REFERENCE_FILE).stat().st_mtime_ns == cached  # reused, not recomputed
    assert_same(straight, resumed, file, atol=1e-6)
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4]


def plain_logps(model: Any, example: dict[str, list[int]], side: str) -> torch.Tensor:
    """The reference computation: one [prompt | response] row, full logits, summed response log-probs."""
    prompt, response = example["prompt_ids"], example[f"{side}_ids"]
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1 : -1]
    scored = torch.tensor(example[f"{side}_mask"], dtype=torch.float32)
    return (token_logprobs(logits, torch.tensor(response)) * scored).sum()


def tiny_pairs(tmp_path, tiny_model_dir) -> tuple[Any, list[dict[str, list[int]]]]:
    from r1lab.models import load_model

    cfg = make_cfg(tmp_path, tiny_model_dir, "unused")
    model, tokenizer = load_model(cfg.model, trainable=True)
    return model, tokenizer, build_preference_dataset(cfg.data, tokenizer, read_preference_data(cfg.data))


def test_shared_prompt_forward_equals_the_plain_forward(tmp_path, tiny_model_dir) -> None:
    model, tokenizer, dataset = tiny_pairs(tmp_path, tiny_model_dir)
    examples = dataset[:5]  # different prompt, chosen and rejected lengths: padding on every side
    chosen, rejected, n_chosen, _ = pair_logps(model, model, examples, tokenizer.pad_token_id, "cpu")
    (chosen.sum() - 0.5 * rejected.sum()).backward()
    shared = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    plain_c = torch.stack([plain_logps(model, ex, "chosen") for ex in examples])
    plain_r = torch.stack([plain_logps(model, ex, "rejected") for ex in examples])
    (plain_c.sum() - 0.5 * plain_r.sum()).backward()
    torch.testing.assert_close(chosen, plain_c, rtol=0, atol=1e-5)
    torch.testing.assert_close(rejected, plain_r, rtol=0, atol=1e-5)
    assert n_chosen.tolist() == [sum(ex["chosen_mask"]) for ex in examples]
    for name, p in model.named_parameters():
        torch.testing.assert_close(shared[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_precomputed_reference_equals_the_online_reference(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "pre", "model.lora.r=4", "model.lora.dropout=0", "optim.lr=1e-3")
    pre = run_dpo(cfg)
    table = load_file(Path(cfg.train.output_dir) / REFERENCE_FILE)["logps"]
    model, _, dataset = tiny_pairs(tmp_path, tiny_model_dir)  # the base: what adapter_disabled runs
    with torch.no_grad():
        online = torch.tensor(
            [[plain_logps(model, ex, s).item() for s in ("chosen", "rejected")] for ex in dataset]
        )
    # to 1e-6 relative: the sums are ~-70 nats in float32 (spacing 8e-6 there), batched with other padding
    torch.testing.assert_close(table, online, rtol=1e-6, atol=0)
    # the same LoRA run with the reference taken on line from the adapter-disabled model trains the same
    live = run_dpo(
        make_cfg(tmp_path, tiny_model_dir, "live", *cfg_overrides(cfg), "reference=adapter_disabled")
    )
    assert not (Path(live).parent / REFERENCE_FILE).exists()
    assert_same(pre, live, "adapter_model.safetensors", atol=1e-6)


def cfg_overrides(cfg: DPOConfig) -> list[str]:
    return ["model.lora.r=4", "model.lora.dropout=0", "optim.lr=1e-3"]


@pytest.mark.parametrize("loss", ["simpo", "orpo", "ipo", "hinge", "robust"])
def test_every_loss_trains(tmp_path, tiny_model_dir, loss) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, loss, f"loss={loss}", "train.max_steps=2", "rpo_alpha=0.1")
    run_dpo(cfg)
    out = Path(cfg.train.output_dir)
    assert (out / REFERENCE_FILE).exists() == (loss not in ("simpo", "orpo"))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows(out))


def test_config_mistakes_are_user_errors(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(UserError, match="does not use it"):
        run_dpo(make_cfg(tmp_path, tiny_model_dir, "a", "loss=hinge", "label_smoothing=0.1"))
    with pytest.raises(UserError, match="does not use it"):
        run_dpo(make_cfg(tmp_path, tiny_model_dir, "b", "simpo_gamma=1.0"))
    with pytest.raises(UserError, match="reference-free"):
        run_dpo(
            make_cfg(
                tmp_path, tiny_model_dir, "c", "loss=simpo", "model.lora.r=4", "reference=adapter_disabled"
            )
        )
    with pytest.raises(UserError, match="unknown preference loss"):
        run_dpo(make_cfg(tmp_path, tiny_model_dir, "d", "loss=sigmod"))
    with pytest.raises(UserError, match="needs a LoRA run"):
        make_cfg(tmp_path, tiny_model_dir, "e", "reference=adapter_disabled")
    with pytest.raises(UserError, match="nothing is held out"):
        make_cfg(tmp_path, tiny_model_dir, "f", "train.eval_every=2")


@pytest.mark.slow
def test_real_default_model_implicit_accuracy_rises(tmp_path, monkeypatch) -> None:
    """SmolLM2-135M-Instruct on addition: the worked solution (chosen) against the same solution with a wrong
    final answer (rejected), so only the answer line differs; the implicit reward learns to rank them."""
    from r1lab.models import pull
    from r1lab.tasks import get_task

    monkeypatch.setenv("R1LAB_HOME", str(Path.home() / ".cache" / "r1lab"))  # the shared model cache
    model_dir = pull("smollm2-135m-instruct")
    problems = get_task("addition").generate(32, seed=0, split="train")
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for p in problems:
            wrong = p["completion"].replace(f"Answer: {p['answer']}", f"Answer: {int(p['answer']) + 10}")
            f.write(json.dumps({"prompt": p["prompt"], "chosen": p["completion"], "rejected": wrong}) + "\n")
    cfg = make_cfg(
        tmp_path, model_dir, "real", "data.max_length=256", "train.max_steps=6", "train.grad_accum=1",
        "optim.lr=2e-5", "train.precision=auto", "beta=0.1",
    )  # fmt: skip
    run_dpo(cfg)
    metrics = rows(Path(cfg.train.output_dir))
    late = metrics[-3:]
    assert sum(r["rewards/accuracies"] for r in late) / len(late) > 0.5, metrics
    assert all(r["rewards/margins"] > 0 for r in late) and late[-1]["loss"] < metrics[0]["loss"]
