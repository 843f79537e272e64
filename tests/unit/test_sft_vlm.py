"""The SFT stage on tiny vision-language models (tests/vlm_tiny.py): image rows train, the loss of the first
step equals a hand-masked cross-entropy, final/ (and each checkpoint) reloads with load_vlm and generates,
model.freeze keeps the named parts bit-for-bit, resume continues a run, and each bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from r1lab.config import ModelConfig, SFTConfig, deep_merge, validate
from r1lab.errors import UserError
from r1lab.models.vlm import image_inputs, load_vlm, load_vlm_model
from r1lab.stages.sft import run_sft
from vlm_tiny import build_idefics3, build_llava, build_qwen2_vl, build_text_llm, png

COLOURS = {"Red": (200, 30, 30), "Green": (20, 180, 40), "Blue": (30, 40, 210), "Black": (0, 0, 0)}
PROCESSOR_FILES = ("tokenizer.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm-sft")
    return {
        "llava": build_llava(root / "llava"),
        "idefics3": build_idefics3(root / "idefics3"),
        "text": build_text_llm(root / "text"),
    }


def _chat(image: str, answer: str) -> dict[str, Any]:
    user = [{"type": "image", "image": image}, {"type": "text", "text": "What colour is the square?"}]
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": f"{answer}."}]}


def write_rows(folder: Path, names: list[str] | None = None) -> Path:
    """One row per colour: an image file under images/ (relative to the file) and its name as the answer."""
    names = names or list(COLOURS)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / "images" / f"{name}.png").write_bytes(png(COLOURS[name]))
    file = folder / "train.jsonl"
    file.write_text("".join(json.dumps(_chat(f"images/{n}.png", n)) + "\n" for n in names))
    return file


def cfg_for(folder: Path, rows: Path, out: Path, **over: Any) -> SFTConfig:
    base = {
        "model": {"path": str(folder)},
        "data": {"path": str(rows), "max_length": 128},
        "optim": {"lr": 3e-2, "scheduler": "constant"},
        "train": {"output_dir": str(out), "batch_size": 4, "max_steps": 6, "seed": 0},
    }
    return validate(SFTConfig, deep_merge(base, over))


def logged(out: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in rows if key in row]


def losses(out: Path) -> list[float]:
    return logged(out, "loss")


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_image_sft_lowers_the_loss_and_final_reloads_and_generates(folders, tmp_path, arch):
    data = write_rows(tmp_path / "data")
    train = {"save_every": 3, "max_steps": 10}
    final = run_sft(cfg_for(folders[arch], data, tmp_path / "run", train=train, model={"freeze": []}))
    seen = losses(tmp_path / "run")
    assert len(seen) == 10 and seen[-1] < 0.5 * seen[0], seen
    for folder in (final, tmp_path / "run" / "checkpoints" / "step-3"):
        assert all((folder / f).is_file() for f in PROCESSOR_FILES)
        assert (folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file()
    model, processor = load_vlm(ModelConfig(path=str(final)), trainable=False)
    messages = _chat(str(data.parent / "images" / "Red.png"), "Red")["messages"][:1]
    inputs = image_inputs(processor, messages)
    assert "pixel_values" in inputs
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # the trained model answers with a colour: its greedy first token is a colour name's
    firsts = {processor.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in COLOURS}
    assert out[0, inputs["input_ids"].shape[1]].item() in firsts


def test_the_first_loss_is_the_hand_masked_cross_entropy(folders, tmp_path):
    """Step 1's logged loss is computed before the update: the mean NLL of the answer tokens (and the
    end-of-turn token) of both rows under the initial model, with every other token (prompt, image) unscored."""
    names = ["Red", "Green"]
    data = write_rows(tmp_path / "data", names)
    run_sft(cfg_for(folders["llava"], data, tmp_path / "run", train={"max_steps": 1, "batch_size": 2}))
    model, processor = load_vlm(ModelConfig(path=str(folders["llava"])), trainable=False)
    tokenizer = processor.tokenizer
    total, count = 0.0, 0
    for name in names:
        chat = _chat(str(data.parent / "images" / f"{name}.png"), name)["messages"]
        inputs = image_inputs(processor, chat, add_generation_prompt=False)
        ids = inputs["input_ids"][0]
        answer = tokenizer(f"{name}.<|im_end|>", add_special_tokens=False)["input_ids"]
        n = len(ids)  # the template ends "<|im_end|>\n": the trailing newline is not a target
        assert ids[n - 1 - len(answer) : n - 1].tolist() == answer
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits[0]
        positions = range(n - 1 - len(answer), n - 1)  # label t is predicted at position t - 1
        logp = torch.log_softmax(logits.double(), dim=-1)
        total -= sum(logp[t - 1, ids[t]].item() for t in positions)
        count += len(answer)
    assert losses(tmp_path / "run")[0] == pytest.approx(total / count, rel=1e-5)


def _by_part(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {"vision_tower": {}, "projector": {}, "language_model": {}}
    for key, value in tensors.items():
        part = (
            "vision_tower"
            if "vision_tower." in key
            else "projector"
            if "multi_modal_projector." in key
            else "language_model"
        )
        parts[part][key] = value
    return parts


@pytest.mark.parametrize(
    ("freeze", "changed"),
    [
        (["vision_tower", "language_model"], {"projector"}),  # LLaVA stage 1: the projector alone
        (["language_model"], {"vision_tower", "projector"}),  # the issue's alignment: tower + projector
        (None, {"language_model"}),  # the default: the language model, the vision side fixed
    ],
)
def test_freeze_keeps_the_named_parts_exactly(folders, tmp_path, freeze, changed):
    data = write_rows(tmp_path / "data")
    model: dict[str, Any] = {} if freeze is None else {"freeze": freeze}
    final = run_sft(cfg_for(folders["llava"], data, tmp_path / "run", model=model, train={"max_steps": 2}))
    before = _by_part(load_file(folders["llava"] / "model.safetensors"))
    after = _by_part(load_file(final / "model.safetensors"))
    for part in before:
        assert before[part] and before[part].keys() == after[part].keys()
        same = all(torch.equal(before[part][k], after[part][k]) for k in before[part])
        assert same == (part not in changed), part


def test_freeze_finds_a_projector_inside_the_tower_and_works_with_lora(tmp_path):
    """Qwen2-VL's projector is visual.merger, inside the tower: freezing the tower alone leaves it trainable,
    and with LoRA the trained vision part is a peft modules_to_save copy."""
    folder = build_qwen2_vl(tmp_path / "qwen2_vl")
    model = load_vlm_model(ModelConfig(path=str(folder), freeze=["vision_tower"]))
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(grads[n] for n in grads if ".visual.merger." in n)
    assert not any(grads[n] for n in grads if ".visual.blocks." in n or ".visual.patch_embed." in n)
    assert all(grads[n] for n in grads if ".language_model." in n)
    lora = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    model = load_vlm_model(ModelConfig(path=str(folder), freeze=["vision_tower"], lora=lora))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".merger.modules_to_save.default." in n for n in trained)
    assert not any(".blocks." in n or "patch_embed" in n for n in trained)
    assert all("lora_" in n or ".merger." in n for n in trained)


def test_resume_from_a_checkpoint_matches_the_straight_run(folders, tmp_path):
    data = write_rows(tmp_path / "data")
    over = {"model": {"freeze": ["vision_tower"]}, "train": {"max_steps": 4, "batch_size": 2}}
    straight = run_sft(cfg_for(folders["llava"], data, tmp_path / "straight", **over))
    cfg = cfg_for(
        folders["llava"], data, tmp_path / "resumed", **deep_merge(over, {"train": {"save_every": 2}})
    )
    run_sft(cfg)
    out = Path(cfg.train.output_dir)
    shutil.rmtree(out / "checkpoints" / "step-4")  # as if the run had died after the step-2 checkpoint
    shutil.rmtree(out / "final")
    resumed = run_sft(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto"})}))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]


def test_lora_final_adapter_and_merged_reload_with_the_processor(folders, tmp_path):
    data = write_rows(tmp_path / "data")
    lora = {"r": 2, "alpha": 4, "merge_on_save": True}
    held_out = {"data": {"eval_fraction": 0.25}, "train": {"batch_size": 3, "eval_every": 2}}
    merged = run_sft(cfg_for(folders["llava"], data, tmp_path / "run", model={"lora": lora}, **held_out))
    assert merged.name == "merged"
    evals = logged(tmp_path / "run", "eval_loss")  # the held-out row, batched by collate_images
    assert len(evals) == 3 and evals[-1] < evals[0]
    messages = _chat(str(data.parent / "images" / "Red.png"), "Red")["messages"]
    logits = []
    for folder in (merged, merged.parent):  # the merged model, and the adapter merged into its base on load
        model, processor = load_vlm(ModelConfig(path=str(folder)), trainable=False)
        assert processor.image_processor is not None and (folder / "processor_config.json").is_file()
        with torch.no_grad():
            logits.append(model(**image_inputs(processor, messages), use_cache=False).logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
    base, _ = load_vlm(ModelConfig(path=str(folders["llava"])), trainable=False)
    with torch.no_grad():
        assert not torch.allclose(base(**image_inputs(processor, messages)).logits, logits[0], atol=1e-3)


def test_bad_inputs_are_user_errors(folders, tmp_path):
    data = write_rows(tmp_path / "data")
    with pytest.raises(UserError, match="text-only model") as e:
        run_sft(cfg_for(folders["text"], data, tmp_path / "a"))
    assert e.value.where == f"{data}:1" and "r1lab models compose --llm" in e.value.fix
    assert not (tmp_path / "a").exists()

    missing = write_rows(tmp_path / "missing")
    (missing.parent / "images" / "Blue.png").unlink()
    with pytest.raises(UserError, match=r"Blue\.png does not exist") as e:
        run_sft(cfg_for(folders["llava"], missing, tmp_path / "b"))
    assert e.value.where == f"{missing}:3"

    with pytest.raises(UserError, match="packing is not supported") as e:
        run_sft(cfg_for(folders["llava"], data, tmp_path / "c", packing=True))
    assert e.value.where == "packing"
    with pytest.raises(UserError, match="hft is not supported") as e:
        run_sft(cfg_for(folders["llava"], data, tmp_path / "c", hft=True))
    assert e.value.where == "hft"

    text = tmp_path / "text.jsonl"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    text.write_text(json.dumps({"messages": chat}) + "\n")
    with pytest.raises(UserError, match="text-only model") as e:
        run_sft(cfg_for(folders["text"], text, tmp_path / "d", model={"freeze": ["vision_tower"]}))
    assert e.value.where == "model.freeze"

    with pytest.raises(UserError, match="nothing would train"):
        cfg_for(folders["llava"], data, tmp_path / "e", model={"freeze": ["vision_tower", "projector",
                                                                            "language_model"]})  # fmt: skip
    with pytest.raises(UserError, match="lists language_model"):
        cfg_for(
            folders["llava"], data, tmp_path / "f", model={"freeze": ["language_model"], "lora": {"r": 2}}
        )


def test_qwen2_vl_trains_through_the_stage(tmp_path):
    """Qwen2-VL batches carry image_grid_thw and mm_token_type_ids (its 3D rope). Its processor needs
    torchvision to load and save, so the test builds it without the video side and saves its two parts."""
    from unittest import mock

    from test_data_images import _qwen2_vl_processor

    def processor(path: str) -> Any:
        built = _qwen2_vl_processor(Path(path))
        built.save_pretrained = lambda folder: (
            built.image_processor.save_pretrained(folder),
            built.tokenizer.save_pretrained(folder),
        )
        return built

    folder = build_qwen2_vl(tmp_path / "qwen2_vl")
    data = write_rows(tmp_path / "data")
    with mock.patch("r1lab.models.vlm.load_processor", processor):
        final = run_sft(cfg_for(folder, data, tmp_path / "run", model={"freeze": []}))
    seen = losses(tmp_path / "run")
    assert len(seen) == 6 and seen[-1] < 0.7 * seen[0], seen
    assert (final / "preprocessor_config.json").is_file() and (final / "model.safetensors").is_file()
