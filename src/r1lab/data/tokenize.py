"""Chat templating and loss masks: the labels are the assistant tokens only, including the end-of-turn token.

We do not rely on `{% generation %}` markers (most templates lack them). Instead the conversation is rendered
once in full and once cut just before each trained assistant turn (with the generation prompt): the assistant
span starts where the cut rendering ends and runs through the first end-of-turn token after it (`<|im_end|>`,
`<|eot_id|>`, `<end_of_turn>`, the EOS...). Whatever the template writes after that token (ChatML's "\n") is not
a target: at generation time the model stops at the end-of-turn token and never produces it.
Tokens are mapped to characters with the fast tokenizer's offsets, so the ids are exactly those of the full text.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from r1lab.data.tool_rows import render_tool_conversation
from r1lab.errors import UserError

IGNORE = -100
# Special tokens that end an assistant turn in common templates; only those the tokenizer knows are used.
END_OF_TURN = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<｜end▁of▁sentence｜>",
    "<|end_of_text|>",
)


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """`tools` (a list, maybe empty): a tool conversation, rendered by r1lab.data.tool_rows as the rollout does."""
    if not tokenizer.chat_template:
        raise UserError(
            "the tokenizer has no chat template",
            where="model.path",
            fix="use an instruct model's tokenizer or set model.chat_template to a Jinja template",
        )
    try:
        if tools is not None:
            return render_tool_conversation(tokenizer, messages, tools, generation_prompt)
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as e:  # jinja raises TemplateError for conversations the template refuses (e.g. roles)
        raise UserError(
            f"the chat template failed on a conversation: {e}",
            fix="check the roles and their order, or set model.chat_template",
        ) from None
    return text


def end_of_turn_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The special-token strings that close an assistant turn for this tokenizer (EOS first)."""
    specials = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    found = [t for t in (tokenizer.eos_token, *END_OF_TURN) if t and t in specials]
    return list(dict.fromkeys(found))


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    first_target: int = 0,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans [start, end) of its trained assistant turns."""
    full = render(tokenizer, messages, generation_prompt=False, tools=tools)
    ends = end_of_turn_strings(tokenizer)
    spans = []
    for i, message in enumerate(messages):
        if i < first_target or message["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], generation_prompt=True, tools=tools) if i else ""
        if not full.startswith(prefix):
            raise UserError(
                "the chat template renders a conversation differently when it is cut before an assistant turn, "
                "so the assistant tokens cannot be located",
                where=f"assistant message {i}",
                fix="train on single-turn examples (prompt + completion) or set model.chat_template",
            )
        start = len(prefix)
        hits = [(full.find(e, start), e) for e in ends if full.find(e, start) >= 0]
        if hits:
            pos, token = min(hits)
            end = pos + len(token)
        else:  # a template without an end-of-turn token: train on everything up to the next turn
            nxt = render(tokenizer, messages[: i + 1], generation_prompt=False, tools=tools)
            end = len(nxt) if full.startswith(nxt) else len(full)
        spans.append((start, end))
    return full, spans


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    first_target: int = 0,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[list[int], list[int]]:
    """input_ids of the templated conversation and labels: the token id on trained assistant tokens, else -100.
    `tools`: see `render`."""
    full, spans = assistant_spans(tokenizer, messages, first_target, tools)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            "a fast (Rust) tokenizer is needed to map tokens to characters",
            where="model.path",
            fix="use a model whose folder has tokenizer.json",
        )
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [IGNORE] * len(ids)
    k = 0
    for t, (a, b) in enumerate(enc["offset_mapping"]):
        while k < len(spans) and a >= spans[k][1]:
            k += 1
        if k < len(spans) and spans[k][0] <= a and b > a:
            labels[t] = ids[t]
    return ids, labels


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of the prompt messages followed by the generation prompt (what a rollout continues)."""
    text = render(tokenizer, messages, generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
