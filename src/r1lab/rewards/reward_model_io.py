"""Outcome reward models (ORM) on disk: build one from a causal LM, mark it, load it back, score with it.

A reward model folder is a plain transformers sequence-classification model with one label
(`AutoModelForSequenceClassification.from_pretrained(path)` loads it) plus `reward_model.json`, the marker
r1lab writes (kind, base model, loss, and how a (prompt, completion) pair is templated: system prompt,
max_length). A folder without the marker is refused with what it is instead (a causal LM, a LoRA adapter, a run
folder ...), except a one-label sequence-classification model from elsewhere, scored with no system prompt.

A process reward model (PRM, kind `prm`, loss prm_bce) is the same kind of folder whose score head is read at
each step's separator token instead of the last token: `score_steps` gives one score per step. The loaders of
outcome rewards (`model:` rewards in RL, `eval --select`) refuse it (`load_reward_model(path)` reads kind orm
only; `kinds=("prm",)` reads a PRM).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1lab.config import ModelConfig
from r1lab.data.reward_data import conversation, pad_right, reward_ids
from r1lab.errors import UserError
from r1lab.models import load_model
from r1lab.models.load import _wrap_lora

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MARKER = "reward_model.json"
FIX = "train one with kind: reward_model (r1lab reward-model CONFIG) and give its final/ folder"


def build_reward_model(
    cfg: ModelConfig, *, trainable: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A one-label sequence-classification model on the body of the causal LM `cfg` names (its LM head
    replaced by a fresh score head), with gradient checkpointing and LoRA (the head fully trained) as set."""
    from transformers import AutoModelForSequenceClassification

    causal, tokenizer = load_model(cfg, trainable=False)  # resolves named defaults, adapters, dtype
    config = causal.config
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    config.architectures = None
    model = AutoModelForSequenceClassification.from_config(
        config, dtype=causal.dtype, trust_remote_code=cfg.trust_remote_code
    )
    model.base_model.load_state_dict(causal.base_model.state_dict())
    del causal
    if not trainable:
        return model.eval().requires_grad_(False), tokenizer
    model.train().requires_grad_(True)
    if cfg.gradient_checkpointing:  # as load_model does it (the name since transformers 5.x, else the old)
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if cfg.lora:
        model = _wrap_lora(model, cfg.lora, task_type="SEQ_CLS")
    return model, tokenizer


def write_marker(folder: Path, meta: dict[str, Any]) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"kind": "orm", **meta}, indent=2) + "\n")


def describe(folder: Path) -> str:
    """What a folder that is not a reward model is, in a few words."""
    if not folder.exists():
        return "does not exist"
    if folder.is_file():
        return "is a GGUF file, not a reward model" if folder.suffix == ".gguf" else "is a file, not a folder"
    if (folder / "final" / MARKER).is_file():
        return "is a run folder, not a reward model (its reward model is in final/)"
    if (folder / "generative_verifier.json").is_file():
        return ("is a generative verifier (a causal LM that writes a verdict), not a reward model; use it as a "
                "reward with rewards: [{name: model:PATH}]")  # fmt: skip
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return f"is a LoRA adapter (of {base}), not a reward model"
    if not (folder / "config.json").is_file():
        return "holds no model (no config.json)"
    config = json.loads((folder / "config.json").read_text())
    arch = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    if arch.endswith("ForCausalLM"):
        return (f"is a causal LM ({arch}), not a reward model; train one with kind: reward_model, or a generative "
                "verifier from r1lab data verifier-sft rows")  # fmt: skip
    return f"is a {arch} model, not a one-label reward model"


def load_reward_model(
    path: str | Path, kinds: tuple[str, ...] = ("orm",)
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """(model in eval mode, tokenizer, meta) of a reward model folder of one of `kinds` (orm, prm); a
    UserError says what the folder is when it is not one."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(path).expanduser()
    if (folder / MARKER).is_file():
        meta = json.loads((folder / MARKER).read_text())
    else:
        foreign = (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
        config = AutoConfig.from_pretrained(folder) if foreign else None
        arch = (getattr(config, "architectures", None) or [""])[0]
        if config is None or not arch.endswith("ForSequenceClassification") or config.num_labels != 1:
            raise UserError(f"{folder} {describe(folder)}", where=str(path), fix=FIX)
        meta = {"kind": "orm", "base_model": str(folder), "system_prompt": None, "max_length": None}
    if meta.get("kind") == "prm" and "prm" not in kinds:
        raise UserError(
            f"{folder} is a process reward model (kind prm: one score per step, read at its "
            f"{meta.get('step_sep', '?')!r} separators), but an outcome reward model (orm: one score per "
            "completion) is needed here",
            where=str(folder / MARKER),
            fix="give an ORM folder (a kind: reward_model stage with loss bce or bradley_terry); score steps "
            "with r1lab.rewards.reward_model_io.score_steps",
        )
    if meta.get("kind") not in kinds:
        raise UserError(
            f"{folder} holds a {meta.get('kind')!r} reward model; this loader reads outcome reward models (orm)",
            where=str(folder / MARKER),
            fix=FIX,
        )
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    model.reward_meta = meta  # score() templates with it
    return model, tokenizer, meta


def score(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completions: list[str],
    batch_size: int = 16,
) -> list[float]:
    """The reward of each (prompt, completion), templated as the reward model was trained (the chat template
    saved with it, its system prompt, its last max_length tokens)."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    meta = getattr(model, "reward_meta", {})
    keep = meta.get("max_length")
    sequences = [
        reward_ids(tokenizer, conversation(p, c, meta.get("system_prompt")))
        for p, c in zip(prompts, completions, strict=True)
    ]
    sequences = [s[-keep:] if keep else s for s in sequences]
    device = next(model.parameters()).device
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(sequences), batch_size):
            ids, mask = pad_right(sequences[i : i + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out += logits[:, 0].float().tolist()
    return out


def score_head(model: Any) -> Any:
    """The sequence-classification model's score head (`score`; under peft or DDP wrappers too)."""
    found = [(name, m) for name, m in model.named_modules() if name.split(".")[-1] == "score"]
    if not found:
        raise ValueError(f"{type(model).__name__} has no `score` head to read per token")
    return min(found, key=lambda item: len(item[0]))[1]


def token_scores(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """[B, T] float scores of the head at every position (the model itself pools only the last token's)."""
    seen: list[Any] = []
    handle = score_head(model).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    return seen[-1][..., 0].float()


def score_steps(
    model: Any, tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, Any]], steps: list[str]
) -> list[float]:
    """One score per step of a completion (a PRM loaded with kinds=("prm",)), templated as it was trained
    (its step separator, system prompt and last max_length tokens); a step cut off by max_length gets none.
    `prompt`: the user's text, or the prompt messages as a PRM data row holds them (used as they are)."""
    return score_steps_batch(model, tokenizer, [(prompt, steps)])[0][0]


def score_steps_batch(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    items: list[tuple[str | list[dict[str, Any]], list[str]]],
    batch_size: int = 16,
) -> list[tuple[list[float], int]]:
    """score_steps of many (prompt, steps), right-padded in batches: each one's step scores and the number of
    tokens the PRM read for it. ValueError when a separator is not a token end (step_ids)."""
    import torch

    from r1lab.data.prm_data import step_ids

    meta = getattr(model, "reward_meta", {})
    encoded = []
    for prompt, steps in items:
        if isinstance(prompt, str):
            messages = conversation(prompt, "", meta.get("system_prompt"))[:-1]
        else:
            messages = list(prompt)
        ids, positions = step_ids(tokenizer, messages, steps, meta.get("step_sep", "\n"))
        cut = max(0, len(ids) - (meta.get("max_length") or len(ids)))
        encoded.append((ids[cut:], [p - cut for p in positions if p >= cut]))
    device = next(model.parameters()).device
    out: list[tuple[list[float], int]] = []
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            ids_t, mask = pad_right([ids for ids, _ in chunk], tokenizer.pad_token_id)
            scores = token_scores(model, ids_t.to(device), mask.to(device)).cpu()
            out += [
                ([float(scores[row, p]) for p in positions], len(ids))
                for row, (ids, positions) in enumerate(chunk)
            ]
    return out
