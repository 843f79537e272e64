"""Assistant-only loss masks, token by token, on the tiny ChatML tokenizer."""

from __future__ import annotations

import copy

import pytest

from r1lab.data import IGNORE, tokenize_conversation, tokenize_prompt

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
Q1 = {"role": "user", "content": "What is 12 + 7?"}
A1 = {"role": "assistant", "content": "The answer is 19."}
Q2 = {"role": "user", "content": "Hello!"}
A2 = {"role": "assistant", "content": "I am fine, thanks."}


def targets(tok, ids, labels) -> list[str]:
    """The target tokens, decoded one by one, and a check that each label equals its input id."""
    assert len(ids) == len(labels)
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels, strict=True))
    return [tok.decode([i]) for i, label in zip(ids, labels, strict=True) if label != IGNORE]


def expected(tok, *contents: str) -> list[str]:
    out = []
    for c in contents:
        out += [tok.decode([i]) for i in tok(c, add_special_tokens=False)["input_ids"]] + ["<|im_end|>"]
    return out


def test_single_turn_targets_are_content_and_im_end(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, labels = tokenize_conversation(tok, [SYSTEM, Q1, A1])
    full = tok.apply_chat_template([SYSTEM, Q1, A1], tokenize=False)
    assert ids == tok(full, add_special_tokens=False)["input_ids"]  # exactly the template's tokens
    assert targets(tok, ids, labels) == expected(tok, A1["content"])
    # the "\n" the template writes after <|im_end|> is the last token and is not a target
    assert tok.decode([ids[-1]]) == "\n" and labels[-1] == IGNORE
    assert tok.decode([ids[-2]]) == "<|im_end|>" and labels[-2] == ids[-2]
    # everything up to and including the generation prompt is masked
    prompt = tokenize_prompt(tok, [SYSTEM, Q1])
    assert ids[: len(prompt)] == prompt
    assert all(label == IGNORE for label in labels[: len(prompt)])
    assert labels[len(prompt)] != IGNORE


def test_multi_turn_every_assistant_turn_is_a_target(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, labels = tokenize_conversation(tok, [SYSTEM, Q1, A1, Q2, A2])
    assert targets(tok, ids, labels) == expected(tok, A1["content"], A2["content"])
    # the user turn between them is fully masked
    second_prompt = tokenize_prompt(tok, [SYSTEM, Q1, A1, Q2])
    first_prompt = tokenize_prompt(tok, [SYSTEM, Q1])
    n_a1 = len(expected(tok, A1["content"]))
    assert all(label != IGNORE for label in labels[len(first_prompt) : len(first_prompt) + n_a1])
    assert all(label == IGNORE for label in labels[len(first_prompt) + n_a1 : len(second_prompt)])


def test_first_target_skips_earlier_assistant_turns(tiny_tokenizer):
    """prompt/completion with a few-shot assistant turn inside the prompt: only the completion is trained."""
    tok = tiny_tokenizer
    ids, labels = tokenize_conversation(tok, [Q1, A1, Q2, A2], first_target=3)
    assert targets(tok, ids, labels) == expected(tok, A2["content"])


def test_empty_assistant_content_still_learns_to_stop(tiny_tokenizer):
    ids, labels = tokenize_conversation(tiny_tokenizer, [Q1, {"role": "assistant", "content": ""}])
    assert targets(tiny_tokenizer, ids, labels) == ["<|im_end|>"]


LLAMA3 = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "specials", "end"),
    [
        (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
        (GEMMA, ["<bos>", "<start_of_turn>", "<end_of_turn>", "<eos>"], "<end_of_turn>"),
    ],
)
def test_other_template_families(tiny_tokenizer, template, specials, end):
    """End-of-turn tokens other than ChatML's, and an EOS that differs from the end-of-turn token."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = template
    if "<eos>" in specials:
        tok.eos_token, tok.bos_token = "<eos>", "<bos>"
    ids, labels = tokenize_conversation(tok, [Q1, A1, Q2, A2])
    got = [tok.decode([i]) for i, label in zip(ids, labels, strict=True) if label != IGNORE]
    want = []
    for a in (A1, A2):
        want += [tok.decode([i]) for i in tok(a["content"], add_special_tokens=False)["input_ids"]] + [end]
    assert got == want
