"""Learned rewards: `rewards: [{name: "model:PATH"}]` scores completions with a trained reward model.

The folder is a reward model saved by the `reward_model` stage (r1lab.rewards.reward_model_io reads it), or a
generative verifier (a causal LM with generative_verifier.json: r1lab.rewards.verifier_model scores it as
P(correct) at its verdict line; its only option is batch_size). Unlike a
verifiable reward it is not run per sample in the reward worker process: the model is loaded once per runner
(once per stage), kept in this process and scored batched (`kwargs: {batch_size: N}`), on the policy's device
once the stage calls `RewardRunner.place(device)`. A reward model whose tokenizer differs from the policy's is
fine: it is given the prompt and completion as text and tokenizes them itself.

Keys of such a spec: `weight` (mixed with the other rewards by weight, as any reward), `failure_reward` (given
to a batch whose scoring raised), `kwargs.batch_size` (default 16) and `kwargs.sigmoid` (default true: the
reward is sigmoid(score), a pointwise-trained ORM's P(correct), on a 0/1 verifier's scale, which the
reward-hacking monitor's gap needs; false: the raw score). `timeout` is refused: an in-process call cannot be
cut short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards.verifier import MARKER

PREFIX = "model:"
OPTIONS = {"batch_size", "sigmoid"}


def is_learned(name: str) -> bool:
    """Whether a reward name is a learned reward (`model:PATH`)."""
    return name.strip().startswith(PREFIX)


class LearnedReward:
    """A reward model as a batched reward function: (completions, *, prompts, **columns) -> list[float]."""

    batched = True
    correctness = False  # it estimates correctness; the run's accuracy stays a verifier's

    def __init__(self, path: Path, batch_size: int = 16, sigmoid: bool = True) -> None:
        from r1lab.rewards.reward_model_io import load_reward_model

        self.path, self.batch_size, self.sigmoid = path, batch_size, sigmoid
        self.model, self.tokenizer, self.meta = load_reward_model(path)
        self.model.eval()

    def to(self, device: Any) -> None:
        self.model.to(device)

    def __call__(self, completions: list[str], *, prompts: list[str], **_: Any) -> list[float]:
        """One reward per completion (the spec's kwargs arrive here too; they were read at load)."""
        from r1lab.rewards.reward_model_io import score

        with torch.no_grad():
            values = score(self.model, self.tokenizer, list(prompts), list(completions), self.batch_size)
        return torch.tensor(values).sigmoid().tolist() if self.sigmoid else values


def load_learned(spec: RewardSpec) -> tuple[Any, str]:
    """The reward model of a `model:PATH` spec (loaded now: a bad folder fails before training) and its label."""
    name = spec.name.strip()
    where = f"rewards: name={name!r}"
    raw = name[len(PREFIX) :].strip()
    if not raw:
        raise UserError(
            "a learned reward needs a folder after 'model:'", where=where, fix="write model:path/to/folder"
        )
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise UserError(
            f"reward model folder not found: {path.resolve()}",
            where=where,
            fix="point model: at the final/ folder a `kind: reward_model` stage wrote (relative paths are read "
            "from the directory r1lab runs in)",
        )
    if "timeout" in spec.model_fields_set:
        raise UserError(
            f"reward {name!r}: timeout is not applied to a learned reward (it is scored in this process, "
            "batched, not in the reward worker)",
            where=f"{where}, timeout",
            fix="remove timeout from this reward",
        )
    # label for logs: the folder's name, or its parent's for a stage's final/ (model:runs/x/rm/final -> model:rm)
    folder = path.resolve()
    label = PREFIX + (folder.parent.name if folder.name == "final" else folder.name)
    if (path / MARKER).is_file():  # a generative verifier (rewards/verifier_model.py)
        from r1lab.rewards.verifier_model import load_verifier

        return load_verifier(path, dict(spec.kwargs), name), label
    unknown = sorted(set(spec.kwargs) - OPTIONS)
    if unknown:
        raise UserError(
            f"learned reward {name!r} has no option {', '.join(map(repr, unknown))}",
            where=f"{where}, kwargs",
            fix=f"its options: {', '.join(sorted(OPTIONS))}",
        )
    batch_size = spec.kwargs.get("batch_size", 16)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UserError(
            f"learned reward {name!r}: kwargs.batch_size is {batch_size!r}",
            where=f"{where}, kwargs.batch_size",
            fix="a positive integer (completions per reward-model forward), e.g. 16",
        )
    sigmoid = spec.kwargs.get("sigmoid", True)
    if not isinstance(sigmoid, bool):
        raise UserError(
            f"learned reward {name!r}: kwargs.sigmoid is {sigmoid!r}",
            where=f"{where}, kwargs.sigmoid",
            fix="true (the reward is sigmoid(score), in [0, 1]) or false (the raw score)",
        )
    return LearnedReward(path, batch_size, sigmoid), label
