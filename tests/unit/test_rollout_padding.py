"""Padding helpers: left-padded prompts, and [prompt | completion] rows whose log-probs match each row alone."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from r1lab.algorithms.logprobs import entropy_from_logits, token_logprobs
from r1lab.rollout.padding import concat_prompt_completion, left_pad


def test_left_pad_puts_padding_first_and_masks_it():
    ids, mask = left_pad([[1, 2, 3], [4], []], pad_token_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_concat_prompt_completion_left_pads_prompts():
    completion = torch.tensor([[5, 6, 0], [7, 0, 0]])
    cmask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    ids, attn, pos = concat_prompt_completion([[1, 2, 3], [4]], completion, cmask, pad_token_id=0)
    assert ids.tolist() == [[1, 2, 3, 5, 6, 0], [0, 0, 4, 7, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 1, 1]]


def test_batched_padded_rows_give_each_row_alone_its_logprobs(tiny_model_dir):
    """Alignment check on a real model: batch rows [left-padded prompt | right-padded completion]; the logits
    at the T columns before the last predict the T completion tokens."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, vocab, (n,), generator=g).tolist() for n in (7, 3, 5)]
    lengths = [4, 6, 1]
    completion = torch.zeros(3, 6, dtype=torch.long)
    cmask = torch.zeros(3, 6, dtype=torch.long)
    for i, n in enumerate(lengths):
        completion[i, :n] = torch.randint(5, vocab, (n,), generator=g)
        cmask[i, :n] = 1
    ids, attn, pos = concat_prompt_completion(prompts, completion, cmask, model.config.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=7).logits[:, :-1]
        logp = token_logprobs(logits, completion, 0.9)
        entropy = entropy_from_logits(logits, 0.9)
        for i, (prompt, n) in enumerate(zip(prompts, lengths, strict=True)):
            row = torch.tensor([prompt + completion[i, :n].tolist()])
            alone = model(input_ids=row).logits[0, len(prompt) - 1 : -1].float() / 0.9
            expected = torch.log_softmax(alone, -1).gather(-1, completion[i, :n, None]).squeeze(-1)
            torch.testing.assert_close(logp[i, :n], expected, atol=1e-5, rtol=1e-5)
            p = torch.softmax(alone, -1)
            torch.testing.assert_close(entropy[i, :n], -(p * p.log()).sum(-1), atol=1e-5, rtol=1e-5)
