"""What the model-based selectors measure on a pool's given responses: one forward per record gives the mean
log-probability of its response tokens, their number and the mean last hidden state over the whole text; a
verifier (the task's reward, or --reward) says whether the given response is right."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from r1lab.config import DataConfig, RewardSpec
from r1lab.data import read_sft_data, tokenize_conversation
from r1lab.data.formats import Conversation
from r1lab.data.select import SelectOptions
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.tasks import get_task

WHOLE = 1 << 20  # max_length for reading a pool: selection never drops or cuts a record for its length
RESPONSES_FIX = "give records with an assistant turn (messages) or a completion column"


@dataclass
class Signals:
    """One record's measurements under the target model."""

    logprob: float  # mean log-probability of the response tokens (-loss; perplexity = exp(-logprob))
    tokens: int  # response tokens
    hidden: torch.Tensor  # mean last hidden state over the record's tokens


def reward_specs(options: SelectOptions) -> list[RewardSpec]:
    """The verifier a selector scores with: --reward, else the --task's own reward, else none."""
    task = get_task(options.task) if options.task else None
    return [RewardSpec(name=r) for r in options.rewards] or ([RewardSpec(name=task.reward)] if task else [])


def read_responses(path: str, method: str) -> list[tuple[int, Conversation]]:
    """(record index, conversation) of every record of `path`; each must have a response to score."""
    try:
        read = read_sft_data(DataConfig(path=path, shuffle=False, max_length=WHOLE))
    except UserError as e:  # a prompt-only pool, say
        raise UserError(
            f"selection {method!r} scores given responses: {e.what}", where=e.where, fix=RESPONSES_FIX
        ) from None
    if len(read.conversations) != read.total:
        raise UserError(
            f"selection {method!r} scores given responses, but {read.total - len(read.conversations)} of the "
            f"{read.total} records of {path} have none",
            where=path,
            fix=RESPONSES_FIX,
        )
    return [(number - 1, conv) for number, conv in read.conversations]


def verify_given(
    options: SelectOptions, convs: list[tuple[int, Conversation]], method: str
) -> list[bool] | None:
    """Whether the verifier passes each given response (None when no verifier is named). A pool without the
    gold columns the verifier reads is refused."""
    specs = reward_specs(options)
    if not specs:
        return None
    prompts = [_last(conv, "user") for _, conv in convs]
    responses = [_last(conv, "assistant") for _, conv in convs]
    columns = [conv.columns for _, conv in convs]
    with RewardRunner(specs) as rewards:
        try:
            rewards.check_columns(set.intersection(*(set(c) for c in columns)))
        except UserError as e:
            raise UserError(
                f"selection {method!r} checks the given answers against gold ones: {e.what}",
                where=options.source,
                fix=f"{e.fix}; or drop --task/--reward to select on the model's scores alone",
            ) from None
        batch = rewards.score(responses, prompts, columns)
    assert batch.accuracy is not None
    return [bool(v) for v in batch.accuracy.tolist()]


def _last(conv: Conversation, role: str) -> str:
    return next((str(m["content"]) for m in reversed(conv.messages) if m["role"] == role), "")


@torch.no_grad()
def measure(model: Any, tokenizer: Any, conv: Conversation) -> Signals:
    ids, labels = tokenize_conversation(tokenizer, conv.messages, conv.first_target)
    out = model(
        input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True, use_cache=False
    )
    logp, n = target_logprob(out.logits[0], labels)
    return Signals(logp.item() / max(n, 1), n, out.hidden_states[-1][0].float().mean(dim=0).cpu())


def target_logprob(logits: torch.Tensor, labels: list[int]) -> tuple[torch.Tensor, int]:
    """Summed log-probability of the target tokens (labels != -100) under one row's logits, and their count
    (-inf and 0 when the response was cut away entirely)."""
    targets = torch.tensor(labels[1:], device=logits.device)
    keep = targets != -100
    if not keep.any():
        return torch.tensor(float("-inf")), 0
    logp = torch.log_softmax(logits[:-1][keep].float(), dim=-1).gather(1, targets[keep][:, None])
    return logp.sum(), int(keep.sum())
