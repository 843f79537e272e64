"""Vision-language models: loading each architecture through r1lab, image inputs, LoRA on the language model
only, and `compose_vlm` (LLaVA from a text LLM). Tiny random models from tests/vlm_tiny.py."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r1lab.config import LoraConfig, ModelConfig
from r1lab.errors import UserError
from r1lab.models import load_model, load_tokenizer
from r1lab.models.compose import VISION_PRESETS, compose_vlm
from r1lab.models.vlm import image_inputs, is_image_text_model, load_vlm, vision_modules
from vlm_tiny import build_idefics3, build_llava, build_qwen2_vl, build_text_llm, png

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def _messages(image) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hello"}]}
    ]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm")
    return {
        "llava": build_llava(root / "llava"),
        "idefics3": build_idefics3(root / "idefics3"),
        "qwen2_vl": build_qwen2_vl(root / "qwen2_vl"),
        "text": build_text_llm(root / "text"),
    }


@pytest.mark.parametrize(("arch", "image_tokens"), [("llava", 16), ("idefics3", 4)])
def test_forward_with_an_image(folders, tmp_path, arch, image_tokens):
    file = tmp_path / "square.png"
    file.write_bytes(png())
    model, processor = load_vlm(ModelConfig(path=str(folders[arch])), trainable=False)
    assert type(model).__name__.lower().startswith(arch.replace("_", ""))
    inputs = image_inputs(processor, _messages(str(file)))
    ids = inputs["input_ids"][0]
    # the fixture's sizes give a known count: llava (32 px / 8 px)^2 = 16, idefics3 16 patches / 2^2 = 4
    assert (ids == model.config.image_token_id).sum().item() == image_tokens
    assert "Hello" in processor.tokenizer.decode(ids)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, len(ids), model.config.get_text_config().vocab_size)
    assert torch.isfinite(logits).all()
    # the image changes the prediction: a different picture gives different logits at the last position
    with torch.no_grad():
        other = model(**image_inputs(processor, _messages(png(color=(10, 200, 40))))).logits
    assert not torch.allclose(logits[0, -1], other[0, -1])


def test_qwen2_vl_forward_through_the_loader(folders):
    """Qwen2-VL's model through r1lab's loader; its processor needs torchvision (for the video processor), so
    without it the image tokens are laid out by hand from the image processor's grid."""
    from transformers import Qwen2VLImageProcessorPil

    from r1lab.models.vlm import _open

    cfg = ModelConfig(path=str(folders["qwen2_vl"]))
    if not HAS_TORCHVISION:
        with pytest.raises(UserError, match="torchvision"):
            load_vlm(cfg, trainable=False)
    model, tokenizer = load_model(cfg, trainable=False)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    pixels = Qwen2VLImageProcessorPil.from_pretrained(folders["qwen2_vl"])(
        [_open(png())], return_tensors="pt"
    )
    n = int(pixels["image_grid_thw"].prod()) // 4  # 56 px / 14 px = 4 x 4 patches, merged 2 x 2
    assert n == 4
    text = tokenizer.apply_chat_template(_messages(None), tokenize=False, add_generation_prompt=True)
    text = text.replace("<|image_pad|>", "<|image_pad|>" * n)
    inputs = tokenizer([text], return_tensors="pt") | dict(pixels)
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == model.config.image_token_id).long()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == n
    assert torch.isfinite(logits).all()


def test_image_to_a_text_only_model_is_a_user_error(folders):
    tokenizer = load_tokenizer(ModelConfig(path=str(folders["text"])))
    with pytest.raises(UserError, match="text-only"):
        image_inputs(tokenizer, _messages(png()))
    assert not is_image_text_model(folders["text"])
    with pytest.raises(UserError, match="not an image-text model"):
        load_vlm(ModelConfig(path=str(folders["text"])))


def test_missing_and_unreadable_images_are_user_errors(folders, tmp_path):
    _, processor = load_vlm(ModelConfig(path=str(folders["llava"])), trainable=False)
    with pytest.raises(UserError, match="does not exist"):
        image_inputs(processor, _messages(str(tmp_path / "nope.png")))
    with pytest.raises(UserError, match="cannot read image"):
        image_inputs(processor, _messages(b"not a png"))


def test_compose_copies_the_language_model_exactly(folders, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    llm = folders["text"]
    out = compose_vlm(str(llm), "tiny-vit", tmp_path / "vlm")
    source = load_file(str(llm / "model.safetensors"))
    composed = load_file(str(out / "model.safetensors"))
    vocab = source["model.embed_tokens.weight"].shape[0]
    for key, tensor in source.items():
        if key == "lm_head.weight":  # tied in the tiny llama: saved once, as the embedding
            continue
        new = composed[f"language_model.{key}"]  # transformers saves LLaVA in its checkpoint layout
        if key == "model.embed_tokens.weight":  # one more row, <image>: the mean of the others
            assert torch.equal(new[:vocab], tensor)
            assert new.shape[0] == vocab + 1
            assert torch.allclose(new[vocab], tensor.mean(0))
        else:
            assert torch.equal(new, tensor), key
    # the saved folder is a plain HF folder: auto classes load it, and the vision side has the preset's size
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>") == vocab
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    preset = VISION_PRESETS["tiny-vit"]
    assert model.config.vision_config.hidden_size == preset.hidden_size
    assert model.config.vision_config.num_hidden_layers == preset.num_hidden_layers
    text = processor.apply_chat_template(_messages(None), tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<image>Hello<|im_end|>\n<|im_start|>assistant\n"


def test_compose_bad_input(folders, tmp_path):
    with pytest.raises(UserError, match="unknown vision preset 'huge-vit'") as e:
        compose_vlm(str(folders["text"]), "huge-vit", tmp_path / "x")
    assert "small-vit" in e.value.fix
    with pytest.raises(UserError, match="already has an <image> token"):
        compose_vlm(str(folders["llava"]), "tiny-vit", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _trainable(model) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["llava", "idefics3"])
def test_lora_on_the_language_model_only(folders, arch):
    lora = LoraConfig(r=4, alpha=8, dropout=0.0)
    model, _ = load_vlm(ModelConfig(path=str(folders[arch]), lora=lora), vision_tower="frozen")
    trainable = _trainable(model)
    assert trainable and all(".lora_" in n for n in trainable)
    vision = vision_modules(model.get_base_model())
    assert not any(v in n for n in trainable for v in vision)
    # the count by hand: r * (in + out) for each nn.Linear of the language model (2 layers x 7 projections)
    text = model.get_base_model().config.get_text_config()
    h, i, kv = text.hidden_size, text.intermediate_size, text.num_key_value_heads * (h_dim := 8)
    assert h_dim == text.hidden_size // text.num_attention_heads
    per_layer = 4 * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
    assert sum(trainable.values()) == text.num_hidden_layers * per_layer


def test_vision_tower_trainable_with_lora_and_without(folders):
    path = str(folders["llava"])
    model, _ = load_vlm(ModelConfig(path=path, lora=LoraConfig(r=4)), vision_tower="trainable")
    trainable = _trainable(model)
    tower = {n for n in trainable if "vision_tower" in n}
    projector = {n for n in trainable if "multi_modal_projector" in n}
    assert tower and projector  # trained fully, as peft modules_to_save
    assert all(".lora_" in n for n in set(trainable) - tower - projector)
    full, _ = load_vlm(ModelConfig(path=path), vision_tower="frozen")
    frozen = {n for n, p in full.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in full.named_parameters() if "vision_tower" in n or "projector" in n}


def test_lora_adapter_with_a_trained_vision_side_saves_and_reloads(folders, tmp_path):
    """The adapter folder carries the trained tower and projector (peft modules_to_save) and the LoRA delta;
    loading it merges both into the base (the processor comes from the base folder)."""
    from r1lab.models import save_model

    path = str(folders["llava"])
    model, processor = load_vlm(ModelConfig(path=path, lora=LoraConfig(r=4)), vision_tower="trainable")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # a "trained" state: every trainable tensor moved
                p.add_(0.01 * torch.randn_like(p))
    out = save_model(model, processor.tokenizer, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    expected = model.merge_and_unload().state_dict()
    reloaded, reloaded_processor = load_vlm(ModelConfig(path=str(out)), trainable=False)
    assert type(reloaded_processor).__name__ == "LlavaProcessor"
    state = reloaded.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, msg=key)
    base = load_vlm(ModelConfig(path=path), trainable=False)[0].state_dict()
    for key in ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", "model.multi_modal_projector.linear_1.weight",
                "model.language_model.layers.0.self_attn.q_proj.weight"):  # fmt: skip
        assert not torch.equal(state[key], base[key]), key  # trained tower, projector and the LoRA delta


def test_the_compose_command(folders, tmp_path):
    import subprocess
    import sys

    def compose(vision: str, out: Path) -> subprocess.CompletedProcess:
        command = ["models", "compose", "--llm", str(folders["text"]), "--vision", vision, "--out", str(out)]
        return subprocess.run([sys.executable, "-m", "r1lab.cli", *command], capture_output=True, text=True)

    bad = compose("huge-vit", tmp_path / "bad")
    assert bad.returncode == 2
    assert "unknown vision preset 'huge-vit'" in bad.stderr and "small-vit, tiny-vit" in bad.stderr
    assert not (tmp_path / "bad").exists()
    good = compose("tiny-vit", tmp_path / "vlm")
    assert good.returncode == 0, good.stderr
    assert is_image_text_model(tmp_path / "vlm")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "vlm" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600


def test_compose_keeps_smollm2s_chat_format(tmp_path):
    """From a SmolLM2-templated LLM the composed template renders text chats exactly as SmolLM2's own
    (default system turn included), and an image part as `<image>` in place."""
    from transformers import AutoProcessor, AutoTokenizer

    from r1lab.models.cache import SMOLLM2_CHAT_TEMPLATE

    llm = build_text_llm(tmp_path / "llm")
    tokenizer = AutoTokenizer.from_pretrained(llm)
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    tokenizer.save_pretrained(llm)
    processor = AutoProcessor.from_pretrained(compose_vlm(str(llm), "tiny-vit", tmp_path / "vlm"))
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ours = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert ours == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    with_image = processor.apply_chat_template(_messages(None), tokenize=False)
    assert with_image.endswith("<|im_start|>user\n<image>Hello<|im_end|>\n")
    assert with_image.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
