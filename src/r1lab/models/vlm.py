"""Vision-language (image-text-to-text) models through transformers' own classes: detect one from its config,
load it with `AutoModelForImageTextToText` + `AutoProcessor`, LoRA on the language model only, the vision side
(tower and projector) frozen or trainable, and the model inputs of chat messages with images.

    model, processor = load_vlm(ModelConfig(path=folder, lora=LoraConfig()), vision_tower="frozen")
    inputs = image_inputs(processor, [{"role": "user", "content": [{"type": "image", "image": "a.png"},
                                                                   {"type": "text", "text": "What is it?"}]}])
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from r1lab.config import ModelConfig
from r1lab.errors import UserError
from r1lab.models.cache import resolve_model_path

if TYPE_CHECKING:
    from transformers import BatchFeature, PreTrainedModel

VisionTower = Literal["frozen", "trainable"]


def is_image_text_model(path: str | Path) -> bool:
    """Whether the HF folder `path` holds a model transformers maps to AutoModelForImageTextToText."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    file = Path(path) / "config.json"
    if not file.is_file():
        return False
    config = json.loads(file.read_text())
    return config.get("model_type") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def image_text_base(cfg: ModelConfig) -> str | None:
    """The folder of the vision-language model `cfg.path` names (an adapter folder's base), or None when the
    model is not one (a text LLM, a GGUF file)."""
    from r1lab.models.load import _adapter_config

    try:
        path = resolve_model_path(cfg.path, cfg.revision)
    except UserError:  # not found: not known to be a VLM; the data is checked first, then loading says why
        return None
    adapter = _adapter_config(Path(path))
    base = resolve_model_path(adapter["base_model_name_or_path"]) if adapter else path
    return base if is_image_text_model(base) else None


def load_vlm(
    cfg: ModelConfig, *, trainable: bool = True, vision_tower: VisionTower = "frozen"
) -> tuple[PreTrainedModel, Any]:
    """Load the vision-language model and processor `cfg.path` names (a folder, hub id or LoRA adapter folder).

    trainable=False: eval mode, no grads. Otherwise `cfg.freeze` lists the parts kept fixed (vision_tower,
    projector, language_model); when it is None, `vision_tower` says whether the vision side (tower and
    projector) trains: "frozen" keeps it fixed; "trainable" trains it fully. With LoRA a trained vision part is
    a peft `modules_to_save`, so the adapter folder carries it. `cfg.lora` goes on the language model only.
    The processor renders with `cfg.chat_template` when one is given, and pads with eos when it has no pad."""
    from r1lab.models.load import _adapter_config, _read_template

    path = resolve_model_path(cfg.path, cfg.revision)
    adapter = _adapter_config(Path(path))
    if (
        adapter and not (Path(path) / "processor_config.json").is_file()
    ):  # save_model writes the tokenizer only
        path = resolve_model_path(adapter["base_model_name_or_path"])
    processor = load_processor(path)
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.chat_template:
        processor.chat_template = _read_template(cfg.chat_template)
    return load_vlm_model(cfg, trainable=trainable, vision_tower=vision_tower), processor


def load_vlm_model(cfg: ModelConfig, *, trainable: bool = True, vision_tower: VisionTower = "frozen") -> Any:
    """The model of `load_vlm` alone (no processor: text-only use, or a processor that cannot load here)."""
    from transformers import AutoModelForImageTextToText

    from r1lab.models.load import _adapter_config, _resolve_dtype, _wrap_lora, load_tokenizer

    path = resolve_model_path(cfg.path, cfg.revision)
    adapter = _adapter_config(Path(path))
    base = resolve_model_path(adapter["base_model_name_or_path"]) if adapter else path
    if not is_image_text_model(base):
        raise UserError(
            f"{base} is not an image-text model (its config.json model_type is not a vision-language one)",
            where="model.path",
            fix="give a vision-language model (LLaVA, Idefics3/SmolVLM, Qwen2-VL, ...) or "
            "`r1lab models compose` one",
        )
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(cfg.dtype, Path(base))}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    tokenizer = load_tokenizer(cfg, path=path)
    for role in ("pad", "eos"):
        if getattr(model.generation_config, f"{role}_token_id", None) is None:
            setattr(model.generation_config, f"{role}_token_id", getattr(tokenizer, f"{role}_token_id"))
    if not trainable:
        model.eval()
        model.requires_grad_(False)
        return model
    model.train()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    frozen = set(cfg.freeze) if cfg.freeze is not None else {"vision_tower", "projector"}
    if cfg.freeze is None and vision_tower == "trainable":
        frozen = set()
    parts = vlm_parts(model)
    if cfg.lora is None:
        for name, param in model.named_parameters():
            param.requires_grad_(part_of(name, parts) not in frozen)
        return model
    if cfg.lora.init == "corda":
        raise UserError(
            "lora.init corda is not supported for vision-language models",
            where="model.lora.init",
            fix="use default, gaussian, pissa or olora",
        )
    lora = cfg.lora.model_copy(
        update={"target_modules": language_lora_targets(model, cfg.lora.target_modules)}
    )
    model = _wrap_lora(model, lora)
    trained = [name for name, part in parts.items() if part not in frozen]
    trained = [n for n in trained if not any(n.startswith(f"{o}.") for o in trained)]  # outermost only
    if trained:
        from peft.utils.other import set_additional_trainable_modules

        peft_config = model.peft_config[model.active_adapter]
        peft_config.modules_to_save = trained
        set_additional_trainable_modules(model, peft_config, model.config, model.active_adapter)
        for name, param in model.named_parameters():  # e.g. Qwen2-VL's merger inside a trained tower
            if ".modules_to_save." in name:
                original = name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")
                param.requires_grad_(part_of(original, parts) not in frozen)
    return model


def load_processor(path: str) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except ImportError as e:  # e.g. Qwen2-VL's processor needs a video processor, which needs torchvision
        raise UserError(
            f"the processor of {path} needs a package that is not installed: {str(e).strip().splitlines()[0]}",
            where="model.path",
            fix="pip install torchvision (the CPU wheel: --index-url https://download.pytorch.org/whl/cpu)"
            if "torchvision" in str(e).lower()
            else "install the package the message names",
        ) from None


def vision_modules(model: Any) -> list[str]:
    """Full names of the vision side's top modules (tower and projector): the inner model's children that
    are not the language model."""
    inner = _inner(model)
    decoder = inner.get_decoder()
    prefix = _prefix(model, inner)
    return [f"{prefix}{name}" for name, child in inner.named_children() if child is not decoder]


PROJECTORS = ("multi_modal_projector", "connector", "merger", "mm_projector", "aligner")


def vlm_parts(model: Any) -> dict[str, str]:
    """Module name -> part ("vision_tower" or "projector") of the vision side; everything else is the
    language model (decoder, embeddings, LM head). A projector may sit inside the tower (Qwen2-VL's
    visual.merger): the longer name wins in `part_of`."""
    parts: dict[str, str] = {}
    for name in vision_modules(model):
        if name.rsplit(".", 1)[-1] in PROJECTORS:
            parts[name] = "projector"
            continue
        parts[name] = "vision_tower"
        for child, _ in model.get_submodule(name).named_children():
            if child in PROJECTORS:
                parts[f"{name}.{child}"] = "projector"
    return parts


def part_of(name: str, parts: dict[str, str]) -> str:
    """The part the parameter or module `name` belongs to."""
    inside = [p for p in parts if name == p or name.startswith(f"{p}.")]
    return parts[max(inside, key=len)] if inside else "language_model"


def language_lora_targets(model: Any, targets: list[str] | str) -> list[str]:
    """Full names of the language model's nn.Linear modules (matching `targets` by last name unless
    "all-linear"): LoRA goes there and nowhere in the vision tower or projector."""
    import torch

    inner = _inner(model)
    decoder = inner.get_decoder()
    prefix = _prefix(model, inner) + next(n for n, c in inner.named_children() if c is decoder) + "."
    names = [
        prefix + name
        for name, module in decoder.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (targets == "all-linear" or name.rsplit(".", 1)[-1] in targets)
    ]
    if not names:
        raise UserError(
            f"no linear module of the language model matches lora.target_modules {targets}",
            where="model.lora.target_modules",
            fix="use 'all-linear' or names such as q_proj, v_proj",
        )
    return names


def _inner(model: Any) -> Any:
    """The inner model that holds vision tower, projector and language model (`model.model` in transformers)."""
    return model.model


def _prefix(model: Any, inner: Any) -> str:
    return next(f"{name}." for name, child in model.named_children() if child is inner)


# ---------------------------------------------------------------------------------------------- inputs


def image_inputs(
    processor: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True
) -> BatchFeature:
    """Model inputs (input_ids, attention_mask, pixel values, ...) of one chat whose content parts may be
    `{"type": "image", "image": PATH | bytes | PIL.Image}`; the processor expands each image into its tokens.

    A plain tokenizer (text-only model) given an image raises UserError."""
    images = [_open(part.get("image")) for m in messages for part in _parts(m) if part.get("type") == "image"]
    if images and getattr(processor, "image_processor", None) is None:
        raise UserError(
            f"the messages hold {len(images)} image(s) but the model is text-only "
            f"({type(processor).__name__} has no image processor)",
            where="model.path",
            fix="use a vision-language model (e.g. `r1lab models compose`), or drop the image parts",
        )
    text = processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not images:
        tokenizer = getattr(processor, "tokenizer", processor)
        return tokenizer([text], return_tensors="pt", add_special_tokens=False)
    return processor(text=[text], images=[images], return_tensors="pt", add_special_tokens=False)


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _open(image: Any) -> Any:
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        if isinstance(image, bytes | bytearray):
            return Image.open(io.BytesIO(image)).convert("RGB")
        if isinstance(image, str | Path):
            return Image.open(Path(image).expanduser()).convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image file {image} does not exist", fix="give an existing image path") from None
    except UnidentifiedImageError:
        raise UserError(
            f"cannot read image {str(image)[:80]!r}", fix="give a PNG/JPEG file or its bytes"
        ) from None
    raise UserError(
        f"an image part holds {type(image).__name__}, not a path, bytes or PIL image",
        fix='write image parts as {"type": "image", "image": "path/to/file.png"}',
    )
