"""Next-token sampling: filters keep the right candidates, log-probs are those of the unfiltered tempered policy."""

from __future__ import annotations

import math

import torch

from r1lab.rollout import SamplingParams, sample_next

# one row, probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1
PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log().unsqueeze(0)


def draw(params: SamplingParams, rows: int = 4000, logits: torch.Tensor = LOGITS) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    tokens, _ = sample_next(logits.expand(rows, -1), params, gen)
    return tokens


def test_greedy_takes_argmax_and_reports_its_temperature_one_logprob():
    logits = torch.randn(5, 11)
    tokens, logp = sample_next(logits, SamplingParams(temperature=0.0))
    assert torch.equal(tokens, logits.argmax(-1))
    expected = torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(logp, expected)


def test_logprob_is_of_the_unfiltered_tempered_distribution():
    logits = torch.randn(64, 50)
    params = SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05)
    tokens, logp = sample_next(logits, params, torch.Generator().manual_seed(3))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(logp, expected)


def test_plain_sampling_matches_the_tempered_softmax():
    temperature = 2.0
    tokens = draw(SamplingParams(temperature=temperature), rows=20000)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    expected = torch.softmax(LOGITS[0] / temperature, -1)
    assert (freq - expected).abs().max() < 0.015


def test_top_k_keeps_the_k_most_likely():
    tokens = draw(SamplingParams(top_k=2))
    assert set(tokens.tolist()) == {0, 1}
    freq = (tokens == 0).float().mean().item()
    assert abs(freq - 0.5 / 0.8) < 0.03  # renormalised over the two kept tokens


def test_top_k_one_is_greedy():
    logits = torch.randn(32, 40)
    tokens = draw(SamplingParams(top_k=1, temperature=1.3), rows=32, logits=logits)
    assert torch.equal(tokens, logits.argmax(-1))


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert set(draw(SamplingParams(top_p=0.7)).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(draw(SamplingParams(top_p=0.5)).tolist()) == {0}  # the top token alone reaches 0.5
    assert set(draw(SamplingParams(top_p=0.81)).tolist()) == {0, 1, 2}


def test_top_p_applies_to_the_renormalised_top_k():
    # top_k=3 renormalises to 0.526, 0.316, 0.158: top_p=0.8 then needs the first two only
    assert set(draw(SamplingParams(top_k=3, top_p=0.8)).tolist()) == {0, 1}


def test_min_p_drops_tokens_below_a_fraction_of_the_top_one():
    assert set(draw(SamplingParams(min_p=0.25)).tolist()) == {0, 1, 2}  # 0.05 < 0.25 * 0.5
    assert set(draw(SamplingParams(min_p=0.61)).tolist()) == {0}  # 0.3 < 0.61 * 0.5


def test_min_p_is_judged_after_temperature():
    # at temperature 3 the probabilities flatten, so token 3 (0.05 at T=1) clears min_p=0.25
    assert 3 in set(draw(SamplingParams(temperature=3.0, min_p=0.25)).tolist())


def test_same_generator_seed_same_tokens():
    logits = torch.randn(16, 30)
    a, _ = sample_next(logits, SamplingParams(), torch.Generator().manual_seed(7))
    b, _ = sample_next(logits, SamplingParams(), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_half_precision_logits_give_float32_logprobs():
    logits = torch.randn(4, 10).to(torch.bfloat16)
    _, logp = sample_next(logits, SamplingParams(temperature=0.5), torch.Generator().manual_seed(0))
    assert logp.dtype == torch.float32
    assert all(math.isfinite(x) and x <= 0 for x in logp.tolist())
