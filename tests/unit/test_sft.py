"""The SFT stage on the tiny model: accumulation and packing equivalence, resume, LoRA, run folder, errors."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from r1lab.config import SFTConfig, apply_overrides, load_config, validate
from r1lab.errors import UserError
from r1lab.stages.sft import run_sft


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU extra threads make a step 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_data(path: Path, n: int = 40, seed: int = 0) -> Path:
    """Arithmetic chats of varied length (so batches pad and packing matters)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            answer = f"{a} + {b} = {a + b}. " * rng.randint(1, 4) + f"The answer is {a + b}."
            messages = [
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": answer},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def make_cfg(tmp_path: Path, model_dir: Path, name: str, *overrides: str) -> SFTConfig:
    data = tmp_path / "data.jsonl"
    if not data.exists():
        write_data(data)
    base: dict[str, Any] = {
        "model": {"path": str(model_dir)},
        "data": {"path": str(data), "max_length": 128},
        # A small lr: Adam turns float-rounding noise on near-zero gradients into updates of up to ~lr, so
        # equivalence checks at atol 1e-6 need lr well below 1e-3 (at 3e-3 batch-4 vs 1x4 differ by 4e-6).
        "optim": {"lr": 1e-4, "warmup_steps": 1},
        "train": {"output_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 3},
    }
    return validate(SFTConfig, apply_overrides(base, list(overrides)))


def weights(folder: Path, file: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(folder / file)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"max parameter difference {worst:.3g} > {atol}"


def test_grad_accumulation_gives_the_large_batch_update(tmp_path, tiny_model_dir) -> None:
    big = run_sft(make_cfg(tmp_path, tiny_model_dir, "big", "train.batch_size=4", "train.grad_accum=1"))
    small = run_sft(make_cfg(tmp_path, tiny_model_dir, "acc", "train.batch_size=1", "train.grad_accum=4"))
    # Micro-batches hold different numbers of target tokens, so per-micro-batch means would not match.
    assert_same(weights(big), weights(small), atol=1e-6)
    init = weights(tiny_model_dir)
    moved = max((weights(big)[k] - init[k]).abs().max().item() for k in init)
    assert moved > 2e-4  # training really changed the weights, so the comparison means something


def test_packing_gives_the_padded_update(tmp_path, tiny_model_dir) -> None:
    padded = run_sft(make_cfg(tmp_path, tiny_model_dir, "pad"))
    packed = run_sft(make_cfg(tmp_path, tiny_model_dir, "pack", "packing=true"))
    assert_same(weights(padded), weights(packed), atol=1e-5)
    init = weights(tiny_model_dir)
    moved = max((weights(packed)[k] - init[k]).abs().max().item() for k in init)
    assert moved > 2e-4  # 20x the tolerance above: both runs trained, so their agreement means something


def test_run_folder_metrics_eval_and_checkpoints(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(
        tmp_path,
        tiny_model_dir,
        "run",
        "train.max_steps=8",
        "train.save_every=2",
        "train.save_total_limit=2",
        "train.eval_every=4",
        "data.eval_fraction=0.2",
        "optim.lr=1e-2",
    )
    final = run_sft(cfg)
    out = Path(cfg.train.output_dir)
    assert final == out / "final" and (final / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    for key in ("loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed", "target_tokens", "epoch"):
        assert key in train_rows[0]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-6", "step-8"]  # limit 2
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    reloaded = load_config(SFTConfig, out / "config.yaml")
    assert reloaded == cfg
    meta = json.loads((out / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert meta["step"] == 6 and meta["global_batch"] == 4


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_from_checkpoint_matches_straight_run(tmp_path, tiny_model_dir, lora) -> None:
    extra = ["model.lora.r=4", "model.lora.dropout=0.3"] if lora else []  # dropout: RNG must be restored
    file = "adapter_model.safetensors" if lora else "model.safetensors"
    straight = run_sft(make_cfg(tmp_path, tiny_model_dir, "straight", "train.max_steps=4", *extra))
    cfg = make_cfg(tmp_path, tiny_model_dir, "resumed", "train.max_steps=4", "train.save_every=2", *extra)
    run_sft(cfg)
    out = Path(cfg.train.output_dir)
    shutil.rmtree(out / "checkpoints" / "step-4")  # as if the run had died after the step-2 checkpoint
    shutil.rmtree(out / "final")
    with pytest.raises(UserError, match="already holds checkpoints"):
        run_sft(cfg)
    resumed = run_sft(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto"})}))
    assert_same(weights(straight, file), weights(resumed, file), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_lora_with_merge_writes_adapter_and_loadable_merged_model(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    cfg = make_cfg(tmp_path, tiny_model_dir, "lora", "model.lora.r=4", "model.lora.merge_on_save=true")
    merged = run_sft(cfg)
    final = Path(cfg.train.output_dir) / "final"
    assert merged == final / "merged" and (final / "adapter_model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(merged)
    base = weights(tiny_model_dir)
    changed = [k for k, v in model.state_dict().items() if k in base and not torch.equal(v, base[k])]
    assert changed and all("proj" in k for k in changed)  # only LoRA-wrapped linears moved


def first_loss(folder: Path) -> float:
    rows = [json.loads(line) for line in (folder.parent / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if "loss" in r)


def test_bf16_autocast_runs_the_matmuls_in_bf16(tmp_path, tiny_model_dir, monkeypatch) -> None:
    """precision=bf16 must really autocast: the linear layers output bf16 while the master weights stay fp32,
    and the first step's loss (same weights, same batch) differs from the fp32 one by bf16 rounding only."""
    from r1lab.training import accel

    if not accel.bf16_supported(torch.device("cpu")):
        # bf16 autocast still runs on such a CPU, only emulated and slower: lift the guard that refuses it
        monkeypatch.setattr(accel, "bf16_supported", lambda device: True)
    seen: set[torch.dtype] = set()

    def record(module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            seen.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bf16 = run_sft(make_cfg(tmp_path, tiny_model_dir, "bf16", "train.precision=bf16", "packing=true"))
    finally:
        hook.remove()
    assert seen == {torch.bfloat16}, seen
    assert weights(bf16)["model.norm.weight"].dtype == torch.float32  # fp32 master weights
    fp32 = run_sft(make_cfg(tmp_path, tiny_model_dir, "fp32", "train.precision=fp32", "packing=true"))
    low, full = first_loss(bf16), first_loss(fp32)
    assert low != full and abs(low - full) < 0.01 * full, (low, full)


def test_bad_inputs_are_user_errors(tmp_path, tiny_model_dir) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError) as e:
        run_sft(make_cfg(tmp_path, tiny_model_dir, "file/run"))
    assert e.value.where == "train.output_dir"
    with pytest.raises(UserError, match="fp16 mixed precision needs a GPU"):
        run_sft(make_cfg(tmp_path, tiny_model_dir, "fp16", "train.precision=fp16"))
    with pytest.raises(UserError, match="fewer than one global batch"):
        run_sft(make_cfg(tmp_path, tiny_model_dir, "big", "train.batch_size=64"))
    with pytest.raises(UserError, match="unknown sft loss"):
        run_sft(make_cfg(tmp_path, tiny_model_dir, "loss", "loss=nope"))


@pytest.mark.slow
def test_real_default_model_loss_falls(tmp_path, monkeypatch) -> None:
    from r1lab.models import pull

    monkeypatch.setenv("R1LAB_HOME", str(Path.home() / ".cache" / "r1lab"))  # the shared model cache
    model_dir = pull("smollm2-135m-instruct")
    write_data(tmp_path / "data.jsonl", n=4)
    # One batch = the whole data set, so every step fits the same 4 chats and the loss must fall.
    cfg = make_cfg(tmp_path, model_dir, "real", "train.max_steps=4", "optim.lr=5e-5", "train.precision=auto")
    run_sft(cfg)
    rows = [
        json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1, losses
