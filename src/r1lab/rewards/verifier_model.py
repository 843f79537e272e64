"""A generative verifier as a reward: `rewards: [{name: "model:PATH"}]` on a folder with generative_verifier.json.

How a completion is scored: the verdict tokens are read directly after a fixed prefix, no judgement is generated.
The prefix is the judge prompt (problem + candidate, chat-templated as in SFT) and the assistant turn up to
`Verdict:`: the judgement line (`rewards.verifier.judgement_line`, a function of the candidate alone, so it is
exactly what the verifier was trained to write before its verdict) and the verdict prefix. With l_c and l_i the
logits of the first token where "Verdict: correct" and "Verdict: incorrect" differ, the reward is
P(correct) = sigmoid(l_c - l_i), in [0, 1] like a 0/1 verifier (what the reward-hacking monitor's gap needs).
One right-padded forward pass per batch of `batch_size` completions; tokens the prefix keeps: all.

A tokenizer that merges the verdict word with the text before it, or whose first differing tokens are prefixes
of each other (so either could start the other verdict), is refused when the folder loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from r1lab.config import ModelConfig
from r1lab.data.reward_data import conversation, pad_right, reward_ids
from r1lab.errors import UserError
from r1lab.rewards.verifier import (
    MARKER,
    VERDICT_PREFIX,
    judge_prompt,
    judgement_line,
    read_marker,
    verdict_line,
)

OPTIONS = {"batch_size"}


def verdict_split(tokenizer: Any, messages_of: Any) -> tuple[list[int], int, int]:
    """(prefix ids, id of the 'correct' token, id of the 'incorrect' token) where the two verdicts diverge;
    ValueError when the tokenizer splits them ambiguously. `messages_of(verdict_text)` -> the conversation."""
    good = reward_ids(tokenizer, messages_of(verdict_line(True)))
    bad = reward_ids(tokenizer, messages_of(verdict_line(False)))
    d = next((i for i, (a, b) in enumerate(zip(good, bad, strict=False)) if a != b), min(len(good), len(bad)))
    if d >= min(len(good), len(bad)):
        raise ValueError("the two verdict lines tokenize to one a prefix of the other")
    head = tokenizer.decode(good[:d])
    if not head.rstrip().endswith(VERDICT_PREFIX):
        raise ValueError(
            f"the verdict word is merged with the text before it (the shared prefix ends {head[-20:]!r})"
        )
    rest_good, rest_bad = tokenizer.decode(good[d:]), tokenizer.decode(bad[d:])
    first_good, first_bad = tokenizer.decode(good[d : d + 1]), tokenizer.decode(bad[d : d + 1])
    if rest_bad.startswith(first_good) or rest_good.startswith(first_bad):
        raise ValueError(
            f"the first differing tokens {first_good!r} / {first_bad!r} can each start the other verdict"
        )
    return good[:d], good[d], bad[d]


class GenerativeVerifierReward:
    """A verifier folder as a batched reward function: (completions, *, prompts, **columns) -> P(correct)."""

    batched = True
    correctness = False  # it estimates correctness; the run's accuracy stays a verifier's

    def __init__(self, path: Path, batch_size: int = 16) -> None:
        from r1lab.models import load_model

        self.path, self.batch_size = path, batch_size
        self.meta = read_marker(path) or {}
        config = path / "config.json"
        archs = (
            (json.loads(config.read_text()).get("architectures") or [""])
            if config.is_file()
            else ["ForCausalLM"]
        )
        if not archs[0].endswith("ForCausalLM"):  # e.g. a marker copied into a reward model's folder
            raise UserError(
                f"{path} has a {MARKER} marker but holds a {archs[0] or 'model of unknown architecture'}, not a "
                "causal LM: a generative verifier writes its verdict with a language-model head",
                where=str(path / MARKER),
                fix="give the final/ folder of an SFT or RL stage trained on r1lab data verifier-sft rows, or "
                "remove the marker to use the folder as what it is",
            )
        self.model, self.tokenizer = load_model(ModelConfig(path=str(path)), trainable=False)
        self.model.eval().requires_grad_(False)
        try:  # the tokenizer check, once, on a probe
            self.split("What is 2 + 2?", "2 + 2 = 4\nAnswer: 4")
        except ValueError as e:
            raise UserError(
                f"{path}: the verdict tokens of this generative verifier are split ambiguously: {e}",
                where=str(path / MARKER),
                fix="use a tokenizer that keeps ' correct' / ' incorrect' apart after 'Verdict:' (most BPE "
                "tokenizers do), or score with a reward model instead",
            ) from None

    def to(self, device: Any) -> None:
        self.model.to(device)

    def split(self, problem: str, solution: str) -> tuple[list[int], int, int]:
        system = self.meta.get("system_prompt")
        line = judgement_line(solution)
        return verdict_split(
            self.tokenizer,
            lambda verdict: conversation(judge_prompt(problem, solution), f"{line}\n{verdict}", system),
        )

    def __call__(self, completions: list[str], *, prompts: list[str], **_: Any) -> list[float]:
        """P(correct) per completion (the problem is the prompt's user text)."""
        items = [self.split(p, c) for p, c in zip(prompts, completions, strict=True)]
        device = next(self.model.parameters()).device
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(items), self.batch_size):
                chunk = items[i : i + self.batch_size]
                ids, mask = pad_right([prefix for prefix, _, _ in chunk], self.tokenizer.pad_token_id)
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                last = mask.sum(1).to(device) - 1
                rows = logits[torch.arange(len(chunk), device=device), last]
                good = torch.tensor([g for _, g, _ in chunk], device=device)
                bad = torch.tensor([b for _, _, b in chunk], device=device)
                diff = rows.gather(1, good[:, None]) - rows.gather(1, bad[:, None])
                out += diff[:, 0].sigmoid().tolist()
        return out


def load_verifier(path: Path, spec_kwargs: dict[str, Any], name: str) -> GenerativeVerifierReward:
    """The scorer of a `model:PATH` spec whose folder is a generative verifier (its kwargs checked)."""
    where = f"rewards: name={name!r}, kwargs"
    unknown = sorted(set(spec_kwargs) - OPTIONS)
    if unknown:
        raise UserError(
            f"learned reward {name!r} (a generative verifier) has no option {', '.join(map(repr, unknown))}",
            where=where,
            fix=f"its options: {', '.join(sorted(OPTIONS))} (its reward is already P(correct), in [0, 1])",
        )
    batch_size = spec_kwargs.get("batch_size", 16)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UserError(f"learned reward {name!r}: kwargs.batch_size is {batch_size!r}", where=where,
                        fix="a positive integer (completions per verifier forward), e.g. 16")  # fmt: skip
    return GenerativeVerifierReward(path, batch_size)
