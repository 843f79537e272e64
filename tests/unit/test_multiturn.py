"""Multi-turn tool episodes (r1lab.rollout.multiturn): log-probs against one forward over the whole episode,
masks token by token, episodes ending at different turns, the turn limit, the token budget, malformed calls.
The tools are r1lab.tools' own: its parser and a ToolBox holding one deterministic tool, `add`."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.errors import UserError
from r1lab.rollout import HFEngine, Rollouts, SamplingParams
from r1lab.rollout.multiturn import ToolFormat, run_episodes
from r1lab.tools import Tool, ToolBox, ToolCall, function_schema

IM_END = "<|im_end|>"
CALL = '<tool_call>{"name": "add", "arguments": {"a": 12, "b": 7}}</tool_call>'
NATIVE = (
    "{% if tools %}{{ '<|im_start|>system\n# Tools\n' + (tools | tojson) + '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


def add_box() -> ToolBox:
    return ToolBox([Tool(add, function_schema(add, "test"), isolated=False)])


class ScriptedEngine:
    """Writes scripted turns: the turn index is the number of assistant prompts in the sequence so far, the
    script is chosen by a word of the prompt. Log-prob of a token = -(its position in the sequence) / 1000."""

    name = "script"

    def __init__(self, tokenizer, scripts: dict[str, list[str]]):
        self.tokenizer, self.scripts = tokenizer, scripts
        self.pad_token_id = tokenizer.pad_token_id
        self.calls: list[tuple[int, int]] = []  # (rows, max_new_tokens) per generate call

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        self.calls.append((len(prompt_ids) * n, sampling.max_new_tokens))
        rows, reasons, texts = [], [], []
        for p in prompt_ids:
            text = self.tokenizer.decode(p)
            script = next(s for word, s in self.scripts.items() if word in text)
            turn = script[text.count("<|im_start|>assistant") - 1]
            ids = self.tokenizer(turn, add_special_tokens=False)["input_ids"]
            reason = "stop"
            if len(ids) > sampling.max_new_tokens:
                ids, reason = ids[: sampling.max_new_tokens], "length"
            for _ in range(n):
                rows.append((len(p), ids))
                reasons.append(reason)
                texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        width = max(len(ids) for _, ids in rows)
        tokens = torch.full((len(rows), width), self.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        logps = torch.zeros((len(rows), width))
        for r, (start, ids) in enumerate(rows):
            tokens[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
            logps[r, : len(ids)] = -torch.arange(start, start + len(ids)) / 1000
        index = [i for i in range(len(prompt_ids)) for _ in range(n)]
        return Rollouts(index, [prompt_ids[i] for i in index], tokens, mask, logps, reasons, texts, 0)


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_hand_checked_episode_token_by_token(tokenizer):
    """Plain template (no `tools`): system prompt fallback, the result as a user <tool_response> turn."""
    box = add_box()
    fmt = ToolFormat(tokenizer, box)
    assert not fmt.native and fmt.closer == IM_END + "\n"
    prompt = fmt.prompt_ids([{"role": "user", "content": "What is 12 + 7?"}])
    assert tokenizer.decode(prompt) == (
        f"<|im_start|>system\n{box.system_prompt_fallback()}<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
    )
    answer = "The answer is 19." + IM_END
    engine = ScriptedEngine(tokenizer, {"12 + 7": [CALL, answer]})
    ep = run_episodes(
        engine,
        tokenizer,
        box,
        [prompt],
        1,
        SamplingParams(max_new_tokens=64),
        max_turns=4,
        fmt=fmt,
    )

    # the model stopped on </tool_call> (no <|im_end|>), so the template's whole closing is appended
    segment = ids(
        tokenizer,
        IM_END + "\n<|im_start|>user\n<tool_response>\n19\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n",
    )
    turn1, turn2 = ids(tokenizer, CALL), ids(tokenizer, answer)
    expected = turn1 + segment + turn2
    assert ep.completion_ids[0].tolist() == expected
    assert ep.loss_mask[0].tolist() == [1] * len(turn1) + [0] * len(segment) + [1] * len(turn2)
    assert ep.attention_mask[0].tolist() == [1] * len(expected)
    # each turn's log-probs sit on its own tokens (the script's value: -position / 1000), 0 on the segment
    start2 = len(prompt) + len(turn1) + len(segment)
    want = [-(len(prompt) + i) / 1000 for i in range(len(turn1))] + [0.0] * len(segment)
    want += [-(start2 + i) / 1000 for i in range(len(turn2))]
    assert ep.logprobs[0].tolist() == pytest.approx(want)
    assert ep.prompt_ids == [prompt]
    info = ep.info[0]
    assert (info.turns, info.tool_calls, info.tool_errors, info.truncated) == (2, 1, 0, False)
    assert info.finish_reason == "answer"
    assert ep.answers == ["The answer is 19."]
    assert (box.stats.calls, box.stats.errors) == (1, 0)
    assert engine.calls == [(1, 64), (1, 64)]


def test_native_tool_role_and_an_eos_that_closed_the_turn(tokenizer):
    """A template that knows tools: schemas in the prompt, a tool message; the model's <|im_end|> is kept and
    only the rest of the closing ("\\n") is appended."""
    tokenizer.chat_template = NATIVE
    box = add_box()
    fmt = ToolFormat(tokenizer, box)
    assert fmt.native
    prompt = fmt.prompt_ids([{"role": "user", "content": "What is 12 + 7?"}])
    assert tokenizer.decode(prompt).startswith('<|im_start|>system\n# Tools\n[{"type": "function"')
    engine = ScriptedEngine(tokenizer, {"12 + 7": [CALL + IM_END, "19" + IM_END]})
    ep = run_episodes(
        engine,
        tokenizer,
        box,
        [prompt],
        1,
        SamplingParams(max_new_tokens=64),
        max_turns=3,
        fmt=fmt,
    )
    segment = ids(tokenizer, "\n<|im_start|>tool\n19<|im_end|>\n<|im_start|>assistant\n")
    turn1, turn2 = ids(tokenizer, CALL + IM_END), ids(tokenizer, "19" + IM_END)
    assert ep.completion_ids[0].tolist() == turn1 + segment + turn2
    assert ep.loss_mask[0].tolist() == [1] * len(turn1) + [0] * len(segment) + [1] * len(turn2)


def test_turn_limit_budget_length_and_malformed_calls(tokenizer):
    box = add_box()
    fmt = ToolFormat(tokenizer, box)
    bad = '<tool_call>{"name": "add", "arguments": {"a": 1,</tool_call>'
    scripts = {
        "loop": [CALL] * 10,  # always calls: stopped by max_turns
        "broken": [bad, "sorry" + IM_END],
        "long": ["word " * 40],  # longer than max_new_tokens: cut, truncated
    }
    prompts = [fmt.prompt_ids([{"role": "user", "content": q}]) for q in scripts]
    engine = ScriptedEngine(tokenizer, scripts)
    sampling = SamplingParams(max_new_tokens=80)
    ep = run_episodes(engine, tokenizer, box, prompts, 2, sampling, max_turns=3, fmt=fmt)
    loop, broken, long = ep.info[0], ep.info[2], ep.info[4]
    assert ep.info[1] == loop and ep.info[3] == broken  # both samples of a prompt
    # 3 turns, 3 calls, only the first two run (the third turn was the last allowed)
    assert (loop.turns, loop.tool_calls, loop.finish_reason, loop.truncated) == (3, 3, "max_turns", False)
    assert ep.texts[0].count("<tool_response>") == 2 and ep.texts[0].count("<tool_call>") == 3
    # the malformed call: the tool's error text went back to the model and was counted
    assert (broken.turns, broken.tool_calls, broken.tool_errors, broken.finish_reason) == (2, 1, 1, "answer")
    assert "<tool_response>\nError: the tool call is not valid JSON" in ep.texts[2]
    assert (long.turns, long.finish_reason, long.truncated) == (1, "length", True)
    assert int(ep.loss_mask[4].sum()) == 80
    # episodes that ended drop out of the batch: 6 rows, then 4 (loop, broken), then 2 (loop)
    assert [rows for rows, _ in engine.calls] == [6, 4, 2]

    # a token budget: the episode is ended and marked truncated, never longer than the budget
    call = ids(tokenizer, CALL)
    segment = fmt.segment([("add", "19")], last_token=call[-1])
    for room, turns, second in [(30, 2, 30), (0, 1, None)]:
        # room: tokens left for the second turn (0: the tool segment fills the budget, so it is not appended)
        budget = len(prompts[0]) + len(call) + len(segment) + room
        engine.calls.clear()
        ep = run_episodes(
            engine,
            tokenizer,
            box,
            prompts[:1],
            1,
            sampling,
            max_turns=8,
            max_episode_tokens=budget,
            fmt=fmt,
        )
        info = ep.info[0]
        assert (info.turns, info.finish_reason, info.truncated) == (turns, "budget", True)
        assert [m for _, m in engine.calls] == [80] + ([second] if second else [])
        assert len(prompts[0]) + int(ep.attention_mask[0].sum()) == (
            budget if room else len(prompts[0]) + len(call)
        )
        assert int(ep.loss_mask[0].sum()) == len(call) + room


def test_bad_arguments_are_refused(tokenizer):
    engine, box, sampling = ScriptedEngine(tokenizer, {}), add_box(), SamplingParams()
    with pytest.raises(UserError, match="max_turns"):
        run_episodes(engine, tokenizer, box, [[1]], 1, sampling, max_turns=0)
    with pytest.raises(UserError, match="prompt 1 has 5 tokens, leaving no room in an episode of at most 5"):
        run_episodes(engine, tokenizer, box, [[1], [1] * 5], 1, sampling, max_turns=2, max_episode_tokens=5)


@pytest.mark.parametrize("model_dir", ["tiny_model_dir", "tiny_qwen_dir"])
def test_logprobs_equal_one_forward_over_the_whole_episode(model_dir, tokenizer, request):
    """The key property: with a real model, the sampler's log-probs of the model's tokens in every turn equal
    those of one forward over prompt + every turn + every tool segment, at the loss-mask positions."""
    path = request.getfixturevalue(model_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    box = add_box()

    def parse(text: str) -> list[ToolCall]:
        """A random model writes no <tool_call>: here a turn whose length is not a multiple of 3 calls add."""
        return [ToolCall("add", {"a": len(text), "b": 1}, text)] if len(text) % 3 else []

    questions = ["What is 12 + 7?", "Hello!", "Countdown: reach the target."]
    # the plain chat prompt (the fallback's tool instructions would fill the tiny model's 512-token context)
    chats = [[{"role": "user", "content": q}] for q in questions]
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    prompts = [ids(tokenizer, text) for text in texts]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=16, stop=(" ",), seed=3)
    engine = HFEngine(model, tokenizer)
    ep = run_episodes(engine, tokenizer, box, prompts, 4, sampling, max_turns=4, parse=parse)

    turns = [i.turns for i in ep.info]
    assert len(set(turns)) >= 3 and max(turns) == 4  # episodes of one batch ended at different turns
    assert sum(i.tool_calls for i in ep.info) > 0
    checked = 0
    for r in range(len(ep)):
        n = int(ep.attention_mask[r].sum())
        seq = torch.tensor([ep.prompt_ids[r] + ep.completion_ids[r, :n].tolist()])
        with torch.no_grad():
            logits = model(input_ids=seq).logits[0, len(ep.prompt_ids[r]) - 1 : -1]
        full = torch.log_softmax(logits.float(), -1).gather(-1, seq[0, len(ep.prompt_ids[r]) :, None])[:, 0]
        loss = ep.loss_mask[r, :n].bool()
        torch.testing.assert_close(ep.logprobs[r, :n][loss], full[loss], atol=1e-5, rtol=0)
        assert (ep.logprobs[r, :n][~loss] == 0).all()
        checked += int(loss.sum())
        # tool segments sit between model turns: loss runs = turns
        runs = int((loss[1:] & ~loss[:-1]).sum()) + int(loss[0])
        assert runs == ep.info[r].turns
    assert checked == int(ep.loss_mask.sum()) > 0


def test_a_tool_box_that_raises_becomes_an_error_message(tokenizer):
    class Raising(ToolBox):
        def run(self, call: ToolCall):
            raise RuntimeError("disk on fire")

    box = Raising([Tool(add, function_schema(add, "test"), isolated=False)])
    fmt = ToolFormat(tokenizer, box)
    prompt = fmt.prompt_ids([{"role": "user", "content": "What is 12 + 7?"}])
    engine = ScriptedEngine(tokenizer, {"12 + 7": [CALL, "no idea" + IM_END]})
    ep = run_episodes(
        engine, tokenizer, box, [prompt], 1, SamplingParams(max_new_tokens=80), max_turns=3, fmt=fmt
    )
    info = ep.info[0]
    assert (info.turns, info.tool_calls, info.tool_errors, info.finish_reason) == (2, 1, 1, "answer")
    assert (
        "<tool_response>\nerror: the tool 'add' failed: RuntimeError: disk on fire\n</tool_response>"
        in ep.texts[0]
    )
