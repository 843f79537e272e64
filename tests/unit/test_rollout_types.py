"""Rollouts bookkeeping: token counts, selecting and stacking rows, and the training rows for the RL forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from r1lab.config import RolloutConfig
from r1lab.rollout import Rollouts, SamplingParams, training_rows

PAD = 0


def make(
    prompts: list[list[int]], completions: list[list[int]], reasons: list[str] | None = None
) -> Rollouts:
    width = max(len(c) for c in completions)
    ids = torch.tensor([c + [PAD] * (width - len(c)) for c in completions])
    mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions])
    logps = -torch.arange(1, ids.numel() + 1, dtype=torch.float32).view_as(ids) * mask
    return Rollouts(
        prompt_index=list(range(len(prompts))),
        prompt_ids=prompts,
        completion_ids=ids,
        completion_mask=mask,
        logprobs=logps,
        finish_reasons=reasons or ["stop"] * len(prompts),
        texts=[f"t{i}" for i in range(len(prompts))],
        pad_token_id=PAD,
    )


def test_counts():
    r = make([[5], [6, 7]], [[1, 2, 3], [4]])
    assert len(r) == 2
    assert r.num_tokens == 4
    assert r.completion_lengths == [3, 1]


def test_select_keeps_rows_and_trims_padding():
    r = make([[5], [6, 7], [8]], [[1, 2, 3], [4], [9, 9]])
    s = r.select([1, 2])
    assert s.prompt_ids == [[6, 7], [8]]
    assert s.texts == ["t1", "t2"]
    assert s.completion_ids.tolist() == [[4, PAD], [9, 9]]
    assert torch.equal(s.logprobs, r.logprobs[1:, :2])


def test_concat_pads_to_the_widest_and_offsets_prompt_index():
    a = make([[5]], [[1, 2, 3]])
    b = make([[6], [7]], [[4], [8, 8]])
    c = Rollouts.concat([a, b], index_offsets=[0, 1])
    assert c.prompt_index == [0, 1, 2]
    assert c.completion_ids.tolist() == [[1, 2, 3], [4, PAD, PAD], [8, 8, PAD]]
    assert c.completion_mask.sum().item() == 6
    assert c.logprobs[1, 1:].eq(0).all()


def test_training_rows_left_pad_prompts_right_pad_completions():
    r = make([[5], [6, 7]], [[1, 2, 3], [4]])
    rows = training_rows(r)
    assert rows.completion_start == 2
    assert rows.input_ids.tolist() == [[PAD, 5, 1, 2, 3], [6, 7, 4, PAD, PAD]]
    assert rows.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # positions count real tokens only, as during generation
    assert rows.position_ids[0, 1:].tolist() == [0, 1, 2, 3]
    assert rows.position_ids[1, :3].tolist() == [0, 1, 2]
    assert torch.equal(rows.completion_ids, rows.input_ids[:, rows.completion_start :])


def test_training_rows_for_a_micro_batch_are_trimmed():
    r = make([[5], [6, 7, 8]], [[1, 2, 3], [4]])
    rows = training_rows(r, indices=[0])
    assert rows.input_ids.tolist() == [[5, 1, 2, 3]]
    assert rows.completion_start == 1


def test_sampling_params_from_config():
    cfg = RolloutConfig(
        temperature=0.6, top_p=0.9, top_k=20, min_p=0.1, max_new_tokens=33, stop=["</answer>"]
    )
    p = SamplingParams.from_config(cfg, seed=4)
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.max_new_tokens) == (0.6, 0.9, 20, 0.1, 33)
    assert p.stop == ("</answer>",) and p.seed == 4
    g = SamplingParams.greedy(max_new_tokens=8, stop=["x"])
    assert g.temperature == 0 and g.max_new_tokens == 8 and g.stop == ("x",)
    with pytest.raises(
        dataclasses.FrozenInstanceError
    ):  # frozen: a shared params object cannot be changed under an engine
        g.temperature = 1.0  # type: ignore[misc]
