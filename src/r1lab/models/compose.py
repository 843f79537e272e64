"""Compose a LLaVA-class vision-language model: a vision tower built from a config (random init), the
multimodal projector, and a language model's weights copied in exactly, saved as a plain HF folder that
`AutoModelForImageTextToText` / `AutoProcessor.from_pretrained` load.

    out = compose_vlm("smollm2-135m-instruct", "small-vit", Path("models/smolvlm-raw"))

The tokenizer gets one `<image>` token; its embedding row (input and, when tied, output) starts as the mean of
the existing rows. Every other language-model tensor equals the source's. The tower and projector are random:
the model cannot see until an alignment stage trains them.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1lab.errors import UserError
from r1lab.models.cache import SMOLLM2_CHAT_TEMPLATE, _replace_dir, resolve_model_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class VisionPreset:
    """A SigLIP vision tower: `(image_size // patch_size) ** 2` image tokens per image."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int


VISION_PRESETS: dict[str, VisionPreset] = {
    # ViT-S/16 at 224 px: 21.7M parameters, 196 image tokens
    "small-vit": VisionPreset(384, 1536, 12, 6, 224, 16),
    # for tests and smoke runs: 2 layers of width 32 on 32 px images, 16 image tokens, 23.8K parameters
    "tiny-vit": VisionPreset(32, 64, 2, 4, 32, 8),
}


def _chat_template(default_system: str | None) -> str:
    """ChatML whose message content is a string or a list of {"type": "text"|"image"} parts; each image part
    becomes one `<image>` placeholder, which the processor expands to the tower's image tokens."""
    first = ""
    if default_system:
        first = (
            "{% if loop.first and messages[0]['role'] != 'system' %}"
            f"{{{{ '<|im_start|>system\\n{default_system}<|im_end|>\\n' }}}}{{% endif %}}"
        )
    return (
        "{% for message in messages %}" + first + "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def compose_vlm(llm: str, vision: str, out: Path) -> Path:
    """Build and save the LLaVA-class model of language model `llm` (a named default, folder or hub id) and
    vision preset `vision` to `out` (written atomically). Returns `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

    from r1lab.models.load import _match_umask

    if vision not in VISION_PRESETS:
        raise UserError(
            f"unknown vision preset {vision!r}",
            where="--vision",
            fix=f"use one of: {', '.join(sorted(VISION_PRESETS))}",
        )
    preset = VISION_PRESETS[vision]
    source = resolve_model_path(llm)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if IMAGE_TOKEN in tokenizer.get_vocab():
        raise UserError(
            f"the tokenizer of {source} already has an {IMAGE_TOKEN} token",
            where="--llm",
            fix="give a text-only language model (composing an existing VLM again is not supported)",
        )
    template = _processor_template(tokenizer, source)
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False
    )
    tokenizer.chat_template = template
    _add_mean_row(lm, len(tokenizer))

    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config={"model_type": "siglip_vision_model", **_vision_kwargs(preset)},
        text_config=lm.config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(preset.image_size // preset.patch_size) ** 2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",  # SigLIP has no CLS token to drop
        vision_feature_layer=-1,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.eos_token_id = lm.generation_config.eos_token_id or tokenizer.eos_token_id
    model.generation_config.pad_token_id = lm.generation_config.pad_token_id or tokenizer.pad_token_id

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        build_processor(tokenizer, preset, template).save_pretrained(tmp)
        _match_umask(tmp)  # safetensors writes 0600
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _vision_kwargs(preset: VisionPreset) -> dict[str, Any]:
    return asdict(preset) | {"num_channels": 3, "vision_use_head": False}  # LLaVA reads patch features only


def build_processor(tokenizer: PreTrainedTokenizerBase, preset: VisionPreset, template: str) -> Any:
    """LlavaProcessor: SigLIP image preprocessing (resize to the tower's size, scale to [-1, 1]) and the
    expansion of each `<image>` placeholder into `(image_size // patch_size) ** 2` image tokens."""
    from transformers import LlavaProcessor, SiglipImageProcessorPil

    size = preset.image_size
    images = SiglipImageProcessorPil(size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=preset.patch_size,
        vision_feature_select_strategy="full",
        chat_template=template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
    )


def _processor_template(tokenizer: PreTrainedTokenizerBase, source: str) -> str:
    if "<|im_start|>" not in tokenizer.get_vocab() or "<|im_end|>" not in tokenizer.get_vocab():
        raise UserError(
            f"the tokenizer of {source} has no ChatML tokens (<|im_start|>, <|im_end|>)",
            where="--llm",
            fix="compose from a ChatML model (SmolLM2, Qwen2); the composed chat template is ChatML",
        )
    keep_system = tokenizer.chat_template == SMOLLM2_CHAT_TEMPLATE  # keep SmolLM2's default system turn
    return _chat_template(SMOLLM2_SYSTEM if keep_system else None)


def _add_mean_row(lm: Any, size: int) -> None:
    """Grow the vocabulary to `size`, each new input (and untied output) row the mean of the old rows."""
    import torch

    old = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        embeddings = [lm.get_input_embeddings().weight]
        head = lm.get_output_embeddings()
        if head is not None and head.weight is not embeddings[0]:
            embeddings.append(head.weight)
        for weight in embeddings:
            weight[old:] = weight[:old].mean(0)
