"""Tiny random models and a tiny tokenizer, built offline in seconds, for unit tests."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 + 7? Let us add the ones column first: 2 + 7 = 9, then the tens: 1. The answer is 19.",
    "<think> step by step reasoning </think> <answer> 42 </answer>",
    "user assistant system You are a helpful assistant. Hello! How are you? I am fine, thanks.",
    "0123456789 + - * / = ( ) , . ; : ! ? \\boxed{} Answer: yes no true false A B C D",
    "Countdown: reach the target using the numbers. Multiply, divide, subtract, sort the words.",
] * 20


def build_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHATML
    fast.save_pretrained(path)
    return fast


def tiny_config(tokenizer: PreTrainedTokenizerFast, arch: str = "llama"):
    """A 2-layer config for `tokenizer`: llama, qwen2, or gemma2 (soft-capped logits, sliding-window layers)."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    if arch == "gemma2":
        return Gemma2Config(**common, head_dim=8, sliding_window=8, final_logit_softcapping=5.0)
    return LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)


def build_model(
    path: Path, tokenizer: PreTrainedTokenizerFast, arch: str = "llama", seed: int = 0, **overrides: int
):
    """Save a random model of `tiny_config(tokenizer, arch)`, with `overrides` set on the config (sizes)."""
    import torch

    torch.manual_seed(seed)
    config = tiny_config(tokenizer, arch)
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def build_reward_model(path: Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, **meta: object) -> Path:
    """Save a random one-label sequence-classification model of `tiny_config(tokenizer)` with the reward-model
    marker (`meta` over an ORM's defaults, e.g. kind="prm", step_sep="\\n"), as a reward_model stage saves it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from r1lab.rewards.reward_model_io import write_marker

    config = tiny_config(tokenizer)
    config.num_labels = 1
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    write_marker(path, {"base_model": "tiny", "system_prompt": None, "max_length": None, **meta})
    return path
