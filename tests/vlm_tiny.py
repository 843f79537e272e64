"""Tiny random vision-language models (Qwen2-VL, Idefics3/SmolVLM, LLaVA) with working processors, built
from configs offline in seconds, for unit tests. Each `build_*` saves a plain HF folder and returns its path."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

from tiny import build_model, build_tokenizer

# ChatML with list content; `{image}` is what one image part becomes before the processor expands it
_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ 'IMAGE' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=None,
)


def png(color: tuple[int, int, int] = (200, 30, 30), size: int = 40) -> bytes:
    """A PNG: a coloured square with a white diagonal stripe."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), color)
    ImageDraw.Draw(image).line((0, 0, size, size), fill=(255, 255, 255), width=4)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tokenizer(path: Path, tokens: list[str]):
    tokenizer = build_tokenizer(path / "tokenizer")
    tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    return tokenizer


def _save(model, processor, tokenizer, path: Path) -> Path:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    if processor is not None:
        processor.save_pretrained(path)
    return path


def build_qwen2_vl(path: Path, seed: int = 0) -> Path:
    """Qwen2-VL: 56 px images (min = max pixels), 14 px patches merged 2x2: 4 image tokens per image."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )

    tokenizer = _tokenizer(path, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    ids = tokenizer.convert_tokens_to_ids
    text = _TEXT | dict(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
    )
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14)
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}
    images = Qwen2VLImageProcessorPil(size=pixels)  # the Pil processors need no torchvision
    tokenizer.chat_template = _TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    if importlib.util.find_spec("torchvision") is None:  # Qwen2VLProcessor insists on a video processor
        images.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return _save(model, None, tokenizer, path)
    from transformers import Qwen2VLVideoProcessor

    processor = Qwen2VLProcessor(
        image_processor=images,
        video_processor=Qwen2VLVideoProcessor(size=pixels),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return _save(model, processor, tokenizer, path)


def build_idefics3(path: Path, seed: int = 0) -> Path:
    """Idefics3 (SmolVLM's architecture): 32 px images, no splitting, 8 px patches, pixel shuffle 2: 4 tokens."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = _tokenizer(
        path, ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    )
    text = _TEXT | dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8,
    )  # fmt: skip
    config = Idefics3Config(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    images = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    processor = Idefics3Processor(
        image_processor=images,
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=_TEMPLATE.replace("IMAGE", "<image>"),
    )
    return _save(model, processor, tokenizer, path)


def build_text_llm(path: Path, seed: int = 0) -> Path:
    """A tiny text-only llama (tests/tiny.py) to compose from or to give an image to."""
    tokenizer = build_tokenizer(path)
    build_model(path, tokenizer, seed=seed)
    return path


def build_llava(path: Path, seed: int = 0) -> Path:
    """LLaVA through `r1lab models compose`: a tiny llama + the `tiny-vit` SigLIP tower (16 image tokens)."""
    from r1lab.models.compose import compose_vlm

    llm = build_text_llm(path.parent / f"{path.name}-llm", seed=seed)
    return compose_vlm(str(llm), "tiny-vit", path)


BUILDERS = {"qwen2_vl": build_qwen2_vl, "idefics3": build_idefics3, "llava": build_llava}
