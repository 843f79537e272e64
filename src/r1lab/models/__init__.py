"""Models: find one (named default, local HF folder, .gguf file, hub id), load it (dtype check, attention,
gradient checkpointing, LoRA), save it atomically as plain HF safetensors, and keep the default-model cache.

    path = resolve_model_path("smollm2-135m-instruct")      # pulled into $R1LAB_HOME once
    model, tokenizer = load_model(ModelConfig(path=path, lora=LoraConfig()))
    next_path = save_model(model, tokenizer, Path("runs/x/final"), merge_lora=True)
"""

from r1lab.models.cache import (
    DEFAULT_MODELS,
    DefaultModel,
    convert_gguf,
    list_models,
    pull,
    r1lab_home,
    resolve_model_path,
)
from r1lab.models.load import load_model, load_tokenizer, model_info, save_model

__all__ = [
    "DEFAULT_MODELS",
    "DefaultModel",
    "convert_gguf",
    "list_models",
    "load_model",
    "load_tokenizer",
    "model_info",
    "pull",
    "r1lab_home",
    "resolve_model_path",
    "save_model",
]
