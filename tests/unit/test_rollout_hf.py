"""The transformers rollout engine on tiny random models: layout, stopping, log-probs, seeds, greedy parity."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import RolloutConfig
from r1lab.errors import UserError
from r1lab.rollout import HFEngine, Rollouts, SamplingParams, make_engine, training_rows

QUESTIONS = ["What is 12 + 7?", "Hello!", "Countdown: reach the target using the numbers 3 5 7."]


@pytest.fixture
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def prompts_for(tokenizer, questions=QUESTIONS) -> list[list[int]]:
    out = []
    for q in questions:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def recomputed_logprobs(model, rollouts: Rollouts, temperature: float) -> torch.Tensor:
    """What the RL trainer computes: one full forward over prompt + completion."""
    rows = training_rows(rollouts)
    with torch.no_grad():
        logits = model(
            input_ids=rows.input_ids,
            attention_mask=rows.attention_mask,
            position_ids=rows.position_ids,
            logits_to_keep=rows.completion_ids.shape[1] + 1,
        ).logits[:, :-1]
    logp = torch.log_softmax(logits.float() / temperature, -1)
    return logp.gather(-1, rows.completion_ids.unsqueeze(-1)).squeeze(-1) * rows.completion_mask


def test_layout_shapes_masks_and_groups(model, tokenizer):
    prompts = prompts_for(tokenizer)
    r = HFEngine(model, tokenizer).generate(prompts, 4, SamplingParams(max_new_tokens=12, seed=0))
    assert len(r) == 12
    assert r.prompt_index == [0] * 4 + [1] * 4 + [2] * 4
    assert r.prompt_ids[5] == prompts[1]
    assert r.completion_ids.dtype == torch.long and r.completion_ids.shape == r.completion_mask.shape
    assert r.completion_ids.shape[1] <= 12
    assert r.logprobs.shape == r.completion_ids.shape and (r.logprobs <= 0).all()
    assert r.logprobs[r.completion_mask == 0].eq(0).all()
    assert r.completion_ids[r.completion_mask == 0].eq(tokenizer.pad_token_id).all()
    # masks are a prefix of ones
    lengths = torch.tensor(r.completion_lengths)
    assert torch.equal(r.completion_mask, (torch.arange(r.completion_ids.shape[1]) < lengths[:, None]).long())
    assert set(r.finish_reasons) <= {"stop", "length"}
    assert len(r.texts) == 12 and r.num_tokens == int(lengths.sum())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_logprobs_equal_a_full_forward_recomputation(arch, tiny_model_dir, tiny_qwen_dir, tokenizer):
    """Key check: prefill shared by n samples + cached decode + dropping finished rows changes nothing."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir if arch == "llama" else tiny_qwen_dir)
    prompts = prompts_for(tokenizer)  # different lengths: left padding is exercised
    free = HFEngine(model, tokenizer).generate(prompts, 1, SamplingParams(max_new_tokens=20, seed=1))
    # make two sampled tokens EOS so rows finish at different steps and get dropped from the batch
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, free.completion_ids[0, 8].item()]
    engine = HFEngine(model, tokenizer, batch_size=2)
    r = engine.generate(prompts, 5, SamplingParams(temperature=0.7, max_new_tokens=20, seed=1))
    assert "stop" in r.finish_reasons and "length" in r.finish_reasons
    assert len(set(r.completion_lengths)) > 2
    torch.testing.assert_close(r.logprobs, recomputed_logprobs(model, r, 0.7), atol=1e-5, rtol=0)


def test_eos_stops_the_row_and_is_kept_in_the_mask(model, tokenizer):
    prompts = prompts_for(tokenizer)[:1]
    # one row and the same seed: the same tokens until the row stops (with more rows, a row dropped from the
    # batch changes which random numbers the others draw)
    sampling = SamplingParams(max_new_tokens=16, seed=2)
    free = HFEngine(model, tokenizer).generate(prompts, 1, sampling)
    eos = free.completion_ids[0, 7].item()
    first = free.completion_ids[0].tolist().index(eos)  # the token may occur before position 7
    assert first > 0
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, eos]
    r = HFEngine(model, tokenizer).generate(prompts, 1, sampling)
    assert r.finish_reasons[0] == "stop"
    assert r.completion_lengths[0] == first + 1
    assert r.completion_ids[0, first].item() == eos
    assert r.completion_ids[0, : first + 1].tolist() == free.completion_ids[0, : first + 1].tolist()
    assert r.completion_mask[0, first + 1 :].eq(0).all()


def test_max_new_tokens_gives_length(model, tokenizer):
    model.generation_config.eos_token_id = None
    tokenizer.eos_token = "<|endoftext|>"  # a token the random model never ranks first within 5 steps
    r = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer), 2, SamplingParams.greedy(max_new_tokens=5)
    )
    assert r.completion_ids.shape[1] == 5
    assert r.finish_reasons == ["length"] * 6 and r.completion_lengths == [5] * 6


def test_stop_strings_end_the_row_and_cut_the_text(model, tokenizer):
    prompts = prompts_for(tokenizer)[:1]
    free = HFEngine(model, tokenizer).generate(prompts, 1, SamplingParams(max_new_tokens=16, seed=0))
    pieces = [tokenizer.decode([t]) for t in free.completion_ids[0].tolist()]
    k = next(i for i in range(4, 16) if pieces[i].strip() and pieces[i].isprintable())
    stop = pieces[k - 1][-1:] + pieces[k]  # a stop string spanning two tokens
    r = HFEngine(model, tokenizer).generate(
        prompts, 1, SamplingParams(max_new_tokens=16, stop=(stop,), seed=0)
    )
    text_upto = tokenizer.decode(free.completion_ids[0, : k + 1])
    assert r.finish_reasons == ["stop"]
    assert r.completion_lengths[0] <= k + 1
    assert r.texts[0].endswith(stop) and text_upto.startswith(r.texts[0])
    assert r.texts[0].count(stop) == 1


def test_same_seed_same_rollouts_different_seed_different(model, tokenizer):
    prompts = prompts_for(tokenizer)
    engine = HFEngine(model, tokenizer)
    a = engine.generate(prompts, 3, SamplingParams(max_new_tokens=10, seed=5))
    b = engine.generate(prompts, 3, SamplingParams(max_new_tokens=10, seed=5))
    c = engine.generate(prompts, 3, SamplingParams(max_new_tokens=10, seed=6))
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # without a per-call seed the engine's own stream advances, and restarts the same for a new engine
    d1, d2 = (
        HFEngine(model, tokenizer, seed=9).generate(prompts, 2, SamplingParams(max_new_tokens=8))
        for _ in "ab"
    )
    assert torch.equal(d1.completion_ids, d2.completion_ids)


def test_n_samples_of_a_prompt_differ(model, tokenizer):
    r = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer)[:1], 6, SamplingParams(max_new_tokens=10, seed=0)
    )
    assert len({tuple(row) for row in r.completion_ids.tolist()}) > 1


def test_top_k_one_equals_greedy(model, tokenizer):
    prompts = prompts_for(tokenizer)
    engine = HFEngine(model, tokenizer)
    greedy = engine.generate(prompts, 2, SamplingParams.greedy(max_new_tokens=12))
    top1 = engine.generate(prompts, 2, SamplingParams(top_k=1, temperature=1.0, max_new_tokens=12, seed=3))
    assert torch.equal(greedy.completion_ids, top1.completion_ids)
    torch.testing.assert_close(greedy.logprobs, top1.logprobs)  # greedy log-probs are at temperature 1


def test_greedy_matches_model_generate(model, tokenizer):
    prompts = prompts_for(tokenizer)
    ours = HFEngine(model, tokenizer).generate(prompts, 1, SamplingParams.greedy(max_new_tokens=15))
    rows = training_rows(ours)
    prompt_part = slice(0, rows.completion_start)
    ref = model.generate(
        input_ids=rows.input_ids[:, prompt_part],
        attention_mask=rows.attention_mask[:, prompt_part],
        do_sample=False,
        max_new_tokens=15,
        pad_token_id=tokenizer.pad_token_id,
    )[:, rows.completion_start :]
    for i, length in enumerate(ours.completion_lengths):
        assert ref[i, :length].tolist() == ours.completion_ids[i, :length].tolist()


def test_peft_model_and_train_mode_restored(model, tokenizer):
    model.gradient_checkpointing_enable()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # non-zero LoRA B so the adapter changes the outputs
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.train()
    prompts = prompts_for(tokenizer)
    r = HFEngine(peft_model, tokenizer).generate(prompts, 3, SamplingParams(max_new_tokens=10, seed=0))
    assert peft_model.training
    peft_model.eval()
    torch.testing.assert_close(r.logprobs, recomputed_logprobs(peft_model, r, 1.0), atol=1e-5, rtol=0)


def test_rollout_tensors_can_feed_a_training_step(model, tokenizer):
    r = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer), 2, SamplingParams(max_new_tokens=6, seed=0)
    )
    rows = training_rows(r)
    logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits[
        :, rows.completion_start - 1 : -1
    ]
    logp = torch.log_softmax(logits, -1).gather(-1, rows.completion_ids.unsqueeze(-1)).squeeze(-1)
    loss = -(torch.exp(logp - rows.logprobs) * rows.completion_mask).sum()
    loss.backward()
    assert model.model.embed_tokens.weight.grad is not None


def test_empty_prompt_list(model, tokenizer):
    r = HFEngine(model, tokenizer).generate([], 4, SamplingParams(max_new_tokens=4))
    assert len(r) == 0 and r.num_tokens == 0


def test_user_errors(model, tokenizer):
    engine = HFEngine(model, tokenizer)
    with pytest.raises(UserError, match="empty"):
        engine.generate([[1, 2], []], 2, SamplingParams(max_new_tokens=4))
    with pytest.raises(UserError, match="exceeds the model's context") as err:
        engine.generate([[5] * 500], 2, SamplingParams(max_new_tokens=100))
    assert err.value.where and "max_new_tokens" in err.value.where


def test_make_engine(model, tokenizer):
    engine = make_engine(RolloutConfig(batch_size=2), model, tokenizer)
    assert isinstance(engine, HFEngine) and engine.batch_size == 2
    other = AutoModelForCausalLM.from_config(model.config)
    engine.update_weights(other)
    assert engine.model is other


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_without_vllm_is_a_user_error(model, tokenizer):
    with pytest.raises(UserError, match="vllm is not installed") as err:
        make_engine(RolloutConfig(engine="vllm"), model, tokenizer)
    assert "pip install" in (err.value.fix or "")


@pytest.mark.slow
def test_smollm2_logprobs_and_stop_strings(monkeypatch):
    """On the real default model: recomputed log-probs match, and a stop string ends readable text."""
    monkeypatch.delenv("R1LAB_HOME", raising=False)  # use the shared model cache
    from r1lab.models import pull

    path = pull("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = prompts_for(tokenizer, ["What is 2 + 3? Answer with one number.", "Name a colour."])
    sampling = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=24, stop=("\n",), seed=0)
    r = HFEngine(model, tokenizer).generate(prompts, 3, sampling)
    torch.testing.assert_close(r.logprobs, recomputed_logprobs(model, r, 0.7), atol=1e-4, rtol=0)
    assert any(text.endswith("\n") for text in r.texts)  # the stop string was hit somewhere
    for text in r.texts:
        assert "\n" not in text[:-1]  # and the text ends right after it
