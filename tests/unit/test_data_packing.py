"""Packing and collate: packed and unpacked batches give the same loss on a real (tiny) model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from r1lab.data import IGNORE, block_causal_mask, collate, pack, tokenize_conversation

CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 + 7?"}, {"role": "assistant", "content": "The answer is 19."}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "I am fine, thanks."},
    ],
    [{"role": "user", "content": "yes or no?"}, {"role": "assistant", "content": "no"}],
    [
        {"role": "user", "content": "Countdown: reach the target."},
        {"role": "assistant", "content": "<think> step by step reasoning </think> <answer> 42 </answer>"},
        {"role": "user", "content": "true or false?"},
        {"role": "assistant", "content": "true"},
    ],
    [{"role": "user", "content": "A B C D"}, {"role": "assistant", "content": "C"}],
]


@pytest.fixture(scope="module")
def examples(tiny_tokenizer):
    out = []
    for conv in CONVERSATIONS:
        ids, labels = tokenize_conversation(tiny_tokenizer, conv)
        out.append({"input_ids": ids, "labels": labels})
    return out


def token_losses(model, batch) -> torch.Tensor:
    """Cross-entropy of every target token (labels shifted as in a CausalLM), in row-major order."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return losses[labels != IGNORE]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("model_dir", ["tiny_model_dir", "tiny_qwen_dir"])
def test_packed_loss_equals_unpacked_loss(examples, tiny_tokenizer, impl, model_dir, request):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(model_dir), attn_implementation=impl)
    model.train()  # as in training (dropout is 0 in the tiny config)
    pad = tiny_tokenizer.pad_token_id
    rows = pack(examples, max_length=80)
    assert len(rows) < len(examples)  # several examples do share a row
    in_row_order = [e for row in rows for e in row]
    with torch.no_grad():
        alone = torch.cat(
            [token_losses(model, collate([e], pad, packing=False, max_length=512)) for e in in_row_order]
        )
        padded = token_losses(model, collate(in_row_order, pad, packing=False, max_length=512))
        packed = token_losses(model, collate(rows, pad, packing=True, max_length=80))
        repacked = token_losses(model, collate(examples, pad, packing=True, max_length=80))
        batch = collate(rows, pad, packing=True, max_length=80)
        explicit = token_losses(model, {**batch, "attention_mask": block_causal_mask(batch["position_ids"])})
    # token by token, then the summed and the mean loss over target tokens
    for other in (padded, packed, repacked, explicit):
        assert other.shape == alone.shape
        assert torch.allclose(other, alone, atol=1e-5, rtol=0)
        assert torch.allclose(other.mean(), alone.mean(), atol=1e-5, rtol=0)
        # a sum of ~300 tokens' losses: float32 rounding alone is ~3e-5 there, hence the small rtol
        assert torch.allclose(other.sum(), alone.sum(), atol=1e-5, rtol=1e-6)


def test_packed_rows_positions_and_labels(examples):
    rows = pack(examples, max_length=80)
    batch = collate(rows, pad_token_id=0, packing=True, max_length=80)
    n_targets = sum(sum(label != IGNORE for label in e["labels"]) for e in examples)
    assert int((batch["labels"] != IGNORE).sum()) == n_targets  # no target lost or added
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e["input_ids"])
            assert batch["input_ids"][r, at : at + n].tolist() == e["input_ids"]
            assert batch["position_ids"][r, at : at + n].tolist() == list(range(n))
            # the first token of each example is never a target of the example before it
            assert batch["labels"][r, at] == IGNORE
            at += n
        assert (batch["labels"][r, at:] == IGNORE).all() and (batch["input_ids"][r, at:] == 0).all()


def test_block_causal_mask_structure():
    mask = block_causal_mask(torch.tensor([[0, 1, 2, 0, 1, 0]]))
    allowed = (mask == 0)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    assert mask.shape == (1, 1, 6, 6) and mask.min() == torch.finfo(torch.float32).min


def test_pack_fits_rows_and_keeps_every_example():
    lengths = [7, 3, 5, 2, 8, 1, 4]
    examples = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate(lengths)]
    rows = pack(examples, max_length=10)
    assert all(sum(len(e["input_ids"]) for e in row) <= 10 for row in rows)
    assert sorted(e["input_ids"][0] for row in rows for e in row) == list(range(len(lengths)))
    assert len(rows) == 3  # 30 tokens in rows of 10: best-fit decreasing finds the tight packing
    assert pack(examples, max_length=10) == rows  # deterministic
    with pytest.raises(ValueError, match="longer than max_length"):
        pack(examples, max_length=6)


def test_unpacked_collate_pads_right():
    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = collate(examples, pad_token_id=0, packing=False, max_length=16)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    packed = collate(examples, pad_token_id=0, packing=True, max_length=16)
    assert set(packed) == {"input_ids", "labels", "position_ids"}
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8]] and packed["position_ids"].tolist() == [
        [0, 1, 2, 0]
    ]
    assert packed["labels"].tolist() == [[-100, 6, 7, -100]]  # 8 is not a target of the example before it
