"""SFT switches on the one SFT loop: Masked Thought, Half Fine-Tuning, peft's LoRA initialisations."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from rl_testkit import single_thread
from test_sft import assert_same, make_cfg, weights

from r1lab.config import LoraConfig, MaskThoughtConfig, ModelConfig, SFTConfig, validate
from r1lab.data.mask_thought import ThoughtMasker, mask_inputs, mask_rate, mask_token_id
from r1lab.errors import UserError
from r1lab.models import load_model
from r1lab.stages import sft as sft_stage
from r1lab.stages.sft import run_sft
from r1lab.training.hft import HFT_FILE, layer_matrices


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def resume(cfg: SFTConfig) -> Path:
    return run_sft(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto"})}))


def cut_after_step_2(cfg: SFTConfig) -> None:
    """As if the run had died right after its step-2 checkpoint."""
    out = Path(cfg.train.output_dir)
    for step in list((out / "checkpoints").iterdir()):
        if step.name != "step-2":
            shutil.rmtree(step)
    shutil.rmtree(out / "final")


# ---------------------------------------------------------------------------------------------- Masked Thought


def test_mask_rate_rises_linearly_to_p_max() -> None:
    # p_max 0.4, warmup over half of 10 steps: p = 0.4 * step / 6 until it reaches 0.4
    rates = [mask_rate(s, 10, 0.4, 0.5) for s in range(10)]
    assert rates == pytest.approx([0, 0.4 / 6, 0.8 / 6, 0.2, 1.6 / 6, 2 / 6, 0.4, 0.4, 0.4, 0.4])
    assert mask_rate(5, 10, 0.2, 0.0) == 0.2  # no warm-up: p_max from the first step on


def test_mask_inputs_masks_response_tokens_only_and_keeps_labels() -> None:
    ids = torch.arange(1, 2001).reshape(4, 500)
    labels = ids.clone()
    labels[:, :100] = -100  # prompt
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    out = mask_inputs(batch, 0.25, torch.Generator().manual_seed(0), mask_id=0, vocab_size=5000)
    assert torch.equal(out["labels"], labels) and torch.equal(batch["input_ids"], ids)  # input not changed
    assert torch.equal(out["input_ids"][:, :100], ids[:, :100])  # the prompt is never masked
    masked = out["input_ids"][:, 100:] == 0
    assert torch.equal(out["input_ids"][:, 100:][~masked], ids[:, 100:][~masked])
    assert 0.22 < masked.float().mean().item() < 0.28  # 1,600 draws at p = 0.25
    every = mask_inputs(batch, 1.0, torch.Generator().manual_seed(0), mask_id=7, vocab_size=5000)
    assert (every["input_ids"][:, 100:] == 7).all()
    rand = mask_inputs(batch, 1.0, torch.Generator().manual_seed(0), mask_id=None, vocab_size=50)
    assert (rand["input_ids"][:, 100:] < 50).all() and rand["input_ids"][:, 100:].unique().numel() == 50


def test_the_mask_token_is_configured_or_the_tokenizers_own(tiny_tokenizer) -> None:
    # the tiny tokenizer has no mask and no unk token: its pad token is the default
    assert mask_token_id(MaskThoughtConfig(), tiny_tokenizer) == (tiny_tokenizer.pad_token_id, "<pad>")
    chosen = mask_token_id(MaskThoughtConfig(token="<|endoftext|>"), tiny_tokenizer)
    assert chosen == (tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>"), "<|endoftext|>")
    with pytest.raises(UserError, match=r"mask_thought\.token"):
        mask_token_id(MaskThoughtConfig(token="<mask>"), tiny_tokenizer)
    with pytest.raises(ValueError, match="replace_with: token"):
        MaskThoughtConfig(replace_with="random", token="<pad>")


def record_forwards(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, labels, targets) of every training forward the SFT loop makes."""
    seen = []
    real = sft_stage._forward_loss

    def spy(model, batch, targets, loss_fn, device):
        if model.training:
            seen.append((batch["input_ids"].clone(), batch["labels"].clone(), targets.clone()))
        return real(model, batch, targets, loss_fn, device)

    monkeypatch.setattr(sft_stage, "_forward_loss", spy)
    return seen


def test_sft_masks_inputs_on_schedule_with_labels_unchanged(tmp_path, tiny_model_dir, monkeypatch) -> None:
    seen = record_forwards(monkeypatch)
    run_sft(make_cfg(tmp_path, tiny_model_dir, "plain", "train.max_steps=4"))
    plain, seen[:] = list(seen), []
    cfg = make_cfg(tmp_path, tiny_model_dir, "mft", "train.max_steps=4", "mask_thought.p_max=0.6",
                   "mask_thought.warmup_fraction=0.5")  # fmt: skip
    run_sft(cfg)
    assert len(seen) == len(plain) == 4
    pad = ThoughtMasker(cfg.mask_thought, _tok(tiny_model_dir), seed=42, total_steps=4).mask_id
    assert pad == _tok(tiny_model_dir).pad_token_id
    for step, ((ids, labels, targets), (ids0, labels0, targets0)) in enumerate(zip(seen, plain, strict=True)):
        assert torch.equal(labels, labels0) and torch.equal(targets, targets0)  # what is learned is the same
        response = labels0 != -100
        assert torch.equal(ids[~response], ids0[~response])  # prompts and padding untouched
        changed = ids[response] != ids0[response]
        assert (ids[response][changed] == pad).all()
        # p = 0.6 * step / 3 up to 0.6: 0, 0.2, 0.4, 0.6 of some ~100 response tokens a step
        assert abs(changed.float().mean().item() - min(0.6, 0.2 * step)) < 0.15
    assert not (seen[0][0] != plain[0][0]).any() and (seen[3][0] != plain[3][0]).any()
    rows = [
        json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["mask_rate"] for r in rows] == pytest.approx([0, 0.2, 0.4, 0.6])


def _tok(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_masked_thought_resume_is_bit_exact(tmp_path, tiny_model_dir) -> None:
    extra = ["train.max_steps=4", "mask_thought.p_max=0.5", "mask_thought.replace_with=random"]
    straight = run_sft(make_cfg(tmp_path, tiny_model_dir, "straight", *extra))
    cfg = make_cfg(tmp_path, tiny_model_dir, "resumed", *extra, "train.save_every=2")
    run_sft(cfg)
    cut_after_step_2(cfg)
    assert_same(weights(straight), weights(resume(cfg)), atol=0.0)


# ---------------------------------------------------------------------------------------------- HFT


def frozen_after_run(folder: Path) -> set[str]:
    return set(json.loads((folder / HFT_FILE).read_text())["frozen"])


def test_hft_freezes_the_papers_half_and_only_the_others_move(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "hft", "hft=true", "optim.lr=1e-2")
    final = run_sft(cfg)
    frozen = frozen_after_run(Path(cfg.train.output_dir))
    layers = {f"model.layers.{i}" for i in range(2)}
    per_layer = {layer: [n for n in frozen if n.startswith(layer + ".")] for layer in layers}
    assert set().union(*per_layer.values()) == frozen  # default hft.others: train embeddings and norms
    ffn_counts = []
    for names in per_layer.values():
        assert sum(".self_attn." in n for n in names) == 2  # 2 of q, k, v, o
        ffn_counts.append(sum(".mlp." in n for n in names))
    assert sorted(ffn_counts) == [1, 2]  # 2 of 3 FFN matrices in one half of the layers, 1 in the other
    before, after = weights(tiny_model_dir), weights(final)
    for name in before:
        moved = not torch.equal(before[name], after[name])
        assert moved != (name in frozen), name


def test_hft_draw_is_seeded_biases_follow_and_others_can_be_frozen(tmp_path, tiny_qwen_dir) -> None:
    from r1lab.config import HFTConfig
    from r1lab.training.hft import plan_frozen

    model, _ = load_model(ModelConfig(path=str(tiny_qwen_dir)))
    a, b = plan_frozen(model, HFTConfig(), 1), plan_frozen(model, HFTConfig(), 1)
    assert a == b and any(plan_frozen(model, HFTConfig(), s) != a for s in range(2, 6))
    for name in a:  # qwen2 has q/k/v biases: a frozen matrix freezes its bias too
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            assert name.replace(".weight", ".bias") in a
    everything = plan_frozen(model, HFTConfig(others="freeze"), 1)
    assert set(a) < set(everything) and "model.embed_tokens.weight" in everything
    assert "model.norm.weight" in everything and len(layer_matrices(model)) == 2


def test_hft_resume_keeps_the_recorded_set(tmp_path, tiny_model_dir) -> None:
    straight = run_sft(make_cfg(tmp_path, tiny_model_dir, "straight", "hft=true", "train.max_steps=4"))
    cfg = make_cfg(tmp_path, tiny_model_dir, "resumed", "hft=true", "train.max_steps=4", "train.save_every=2")
    run_sft(cfg)
    cut_after_step_2(cfg)
    assert_same(weights(straight), weights(resume(cfg)), atol=0.0)

    # the record, not a fresh draw, decides: a run resumed under another seed keeps the recorded half
    out = Path(cfg.train.output_dir)
    recorded = frozen_after_run(out)
    cut_after_step_2(cfg)
    at_step_2 = weights(out / "checkpoints" / "step-2")
    other_seed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 7, "resume": "auto"})})
    final = run_sft(other_seed)
    assert frozen_after_run(out) == recorded
    moved = {k for k, v in weights(final).items() if not torch.equal(v, at_step_2[k])}
    assert moved and not moved & recorded


def test_hft_with_lora_is_refused(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(UserError, match=r"remove one of hft and model\.lora"):
        make_cfg(tmp_path, tiny_model_dir, "x", "hft=true", "model.lora.r=2")
    cfg = make_cfg(tmp_path, tiny_model_dir, "y", "hft={others: freeze}")
    assert cfg.hft is not None and cfg.hft.others == "freeze"
    assert make_cfg(tmp_path, tiny_model_dir, "z", "hft=false").hft is None


# ---------------------------------------------------------------------------------------------- LoRA inits


def lora_parts(model) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """{module: (base weight, A, B, scaling)} of every LoRA-wrapped linear."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            out[name] = (
                module.get_base_layer().weight.detach(),
                module.lora_A["default"].weight.detach(),
                module.lora_B["default"].weight.detach(),
                module.scaling["default"],
            )
    return out


def original_linears(model_dir: Path) -> dict[str, torch.Tensor]:
    return {k.removesuffix(".weight"): v for k, v in weights(model_dir).items() if "proj" in k}


def wrapped(model_dir: Path, init: str, **kwargs):
    cfg = ModelConfig(path=str(model_dir), lora=LoraConfig(r=4, alpha=8, init=init))
    return load_model(cfg, **kwargs)[0]


def test_default_and_gaussian_keep_the_base_and_start_at_zero(tiny_model_dir) -> None:
    original = original_linears(tiny_model_dir)
    beyond_bound = {}
    for init in ("default", "gaussian"):
        torch.manual_seed(0)
        parts = lora_parts(wrapped(tiny_model_dir, init))
        assert len(parts) == 14  # 7 linears x 2 layers
        for name, (base, _, b, _) in parts.items():
            assert torch.equal(base, original[name.removeprefix("base_model.model.")]) and not b.any()
        # default: A ~ kaiming-uniform, |A| <= 1/sqrt(fan_in); gaussian: A ~ N(0, 1/r), beyond that bound often
        beyond_bound[init] = sum(int((a.abs() > a.shape[1] ** -0.5).sum()) for _, a, _, _ in parts.values())
    assert beyond_bound["default"] == 0 and beyond_bound["gaussian"] > 100


@pytest.mark.parametrize("init", ["pissa", "olora", "corda"])
def test_residual_inits_move_the_base_so_base_plus_adapter_is_the_original(tiny_model_dir, init) -> None:
    kwargs = {}
    if init == "corda":
        tok = _tok(tiny_model_dir)

        def calibrate(model, tokenizer) -> None:
            text = ["What is 12 + 7? The answer is 19.", "The quick brown fox jumps over the lazy dog."] * 8
            for one in text:  # one unpadded sequence per forward, as peft's covariance hook wants
                model(**tok(one, return_tensors="pt"), use_cache=False)

        kwargs["calibrate"] = calibrate
    original = original_linears(tiny_model_dir)
    model = wrapped(tiny_model_dir, init, **kwargs)
    assert model.training  # corda's preprocessing puts the model in eval mode: load_model turns it back
    for name, (base, a, b, scaling) in lora_parts(model).items():
        want = original[name.removeprefix("base_model.model.")]
        assert not torch.allclose(base, want, atol=1e-3) and b.abs().max() > 1e-3
        assert torch.allclose(base + scaling * b @ a, want, atol=1e-5)
        if init == "pissa":  # A's rows are the top right singular vectors times sqrt(S / scaling)
            s = torch.linalg.svdvals(want)[:4]
            assert torch.allclose(torch.linalg.norm(a, dim=1) ** 2, s / scaling, rtol=1e-4)


def test_corda_without_calibration_data_is_refused(tiny_model_dir) -> None:
    with pytest.raises(UserError, match="calibration data") as e:
        wrapped(tiny_model_dir, "corda")
    assert e.value.where == "model.lora.init"


def test_pissa_sft_saves_an_adapter_for_the_original_base_and_resumes(tmp_path, tiny_model_dir) -> None:
    extra = ["model.lora.r=4", "model.lora.init=pissa", "model.lora.merge_on_save=true", "optim.lr=1e-2"]
    straight = run_sft(make_cfg(tmp_path, tiny_model_dir, "straight", "train.max_steps=4", *extra))
    merged = weights(straight)  # base_res + B A, saved from the training model itself
    reloaded, _ = load_model(ModelConfig(path=str(straight.parent)), trainable=False)  # adapter onto W
    worst = max((reloaded.state_dict()[k] - v).abs().max().item() for k, v in merged.items())
    assert worst < 1e-5
    assert any(not torch.equal(merged[k], v) for k, v in weights(tiny_model_dir).items())

    cfg = make_cfg(tmp_path, tiny_model_dir, "resumed", "train.max_steps=4", "train.save_every=2", *extra)
    run_sft(cfg)
    cut_after_step_2(cfg)
    assert_same(merged, weights(resume(cfg)), atol=1e-6)


def test_corda_sft_runs_on_its_training_examples(tmp_path, tiny_model_dir) -> None:
    extra = ["model.lora.r=4", "model.lora.init=corda", "model.lora.merge_on_save=true", "train.max_steps=1"]
    merged = run_sft(make_cfg(tmp_path, tiny_model_dir, "corda", *extra))
    reloaded, _ = load_model(ModelConfig(path=str(merged.parent)), trainable=False)
    worst = max((reloaded.state_dict()[k] - v).abs().max().item() for k, v in weights(merged).items())
    assert worst < 1e-5


def test_lora_init_config_is_checked() -> None:
    with pytest.raises(UserError, match=r"model\.lora\.init"):
        validate(SFTConfig, {"data": {"path": "x.jsonl"}, "model": {"lora": {"init": "loftq"}}})


# ---------------------------------------------------------------------------------------------- One-Token Rollout


def test_otr_on_a_peaked_policy_is_the_nll() -> None:
    from r1lab.algorithms.sft_losses import SFT_LOSSES

    logits = torch.tensor([[0.0, 60.0, 0.0], [50.0, 0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([1, 0])
    loss, count = SFT_LOSSES.get("otr")(logits, labels, k=4)
    nll, _ = SFT_LOSSES.get("nll")(logits, labels)
    assert count.item() == 2 and loss.item() == pytest.approx(
        nll.item(), abs=1e-9
    )  # every draw is gold: r = 1
    (grad,) = torch.autograd.grad(loss, logits)
    (want,) = torch.autograd.grad(nll, logits)
    assert torch.allclose(grad, want)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_otr_is_the_expected_reward_weighted_log_likelihood(temperature) -> None:
    from r1lab.algorithms.sft_losses import otr

    # p = 1/4, 3/4; gold token 0. Samples from softmax(logits / T): q0 = 1/4 at T = 1, 1/(1 + sqrt 3) at T = 2.
    # E[loss] = -q0 * 1 * ln(1/4) - (1 - q0) * (-0.1) * ln(3/4) + 0.5 * ln 4 (nll_weight 0.5)
    logits, labels = torch.tensor([[0.0, math.log(3)]]), torch.tensor([0])
    q0 = 1 / (1 + 3 ** (1 / temperature))
    want = -q0 * math.log(0.25) + 0.1 * (1 - q0) * math.log(0.75) + 0.5 * math.log(4)
    g = torch.Generator().manual_seed(0)
    kwargs = {"k": 20000, "temperature": temperature, "negative_reward": -0.1, "nll_weight": 0.5}
    loss, _ = otr(logits, labels, generator=g, **kwargs)
    assert loss.item() == pytest.approx(want, abs=0.02)  # 20,000 draws: standard error about 0.004
    ignored, count = otr(torch.zeros(2, 2), torch.tensor([0, -100]), k=3)
    # p = 1/2 each: with n of the 3 draws gold, loss = ln 2 * (n - 0.1 * (3 - n)) / 3; the -100 row adds nothing
    assert count.item() == 1
    assert any(ignored.item() == pytest.approx(math.log(2) * (n - 0.1 * (3 - n)) / 3) for n in range(4))


def test_otr_trains_in_the_sft_loop_and_its_knobs_need_it(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "otr", "loss=otr", "otr.k=4", "otr.nll_weight=0.5")
    final = run_sft(cfg)
    rows = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "loss" in r]) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    assert any(not torch.equal(v, weights(tiny_model_dir)[k]) for k, v in weights(final).items())
    with pytest.raises(UserError, match="read only by loss: otr"):
        make_cfg(tmp_path, tiny_model_dir, "x", "otr.k=4")


def test_otr_eval_loss_is_the_held_out_nll(tmp_path, tiny_model_dir) -> None:
    """eval_loss stays the NLL under loss: otr: with an lr too small to move the weights, the two runs' held-out
    losses agree (OTR's own sampled objective there would not)."""
    common = ["train.max_steps=1", "optim.lr=1e-12", "data.eval_fraction=0.2"]
    losses = []
    for name, extra in [("nll", []), ("otr", ["loss=otr", "otr.negative_reward=-1.0"])]:
        final = run_sft(make_cfg(tmp_path, tiny_model_dir, name, *common, *extra))
        rows = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
        losses.append(next(r["eval_loss"] for r in rows if "eval_loss" in r))
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)  # OTR's objective here: about -5.95
