"""Multi-turn tool-calling episodes on top of any rollout engine: `run_episodes(engine, tokenizer, toolbox, ...)`.

An episode: the prompt, then turns of (the model generates, r1lab parses its `<tool_call>`s, runs them and
appends the results as tool messages) until a turn without a tool call (the final answer), `max_turns` model
turns, or the token budget (`max_episode_tokens`, and never past the model's context window).

The token sequence is built by appending only, never by re-tokenising earlier text: the model's tokens are kept
exactly as sampled, and each tool segment is the chat template's text after the assistant's turn (the closing of
that turn, the tool messages, the next generation prompt), tokenised on its own. So the sequence trained on is
the one the model produced, and `loss_mask` (1 on the model's tokens of every turn, 0 on tool results and
template tokens) and `logprobs` (the sampler's, at the model's tokens) line up with it.

Batching: each turn runs the live episodes as one `engine.generate` call (n samples per prompt on the first
turn, one per episode afterwards), so episodes of a group may end at different turns. Every turn re-prefills
the whole episode: the engine interface takes token lists and keeps no cache between calls (the HF engine
builds a fresh KV cache per call; vLLM's prefix caching reuses the shared prefix on its side). Correctness
first: the log-probs are those of one forward over the whole sequence (tests/unit/test_multiturn.py).

Tool format: templates that know `tools=` (their text mentions `tools`) get the tool schemas in the prompt and
results as `{"role": "tool", "name": ..., "content": ...}` messages; other templates get the toolbox's
plain-text system prompt and results as a user turn of `<tool_response>...</tool_response>` blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from r1lab.errors import UserError
from r1lab.rollout.types import RolloutEngine, Rollouts, SamplingParams

if TYPE_CHECKING:
    from r1lab.tools.calls import ToolCall

TOOL_STOP = "</tool_call>"
_USER, _MARK = "\x00r1lab-user\x00", "\x00r1lab-turn\x00"  # placeholders no template changes


@dataclass
class EpisodeInfo:
    """Per-episode metadata. finish_reason: "answer" (a turn with no tool call), "max_turns" (the last allowed
    turn still called a tool, not run), "length" (a turn reached max_new_tokens without stopping), "budget"
    (the episode reached max_episode_tokens or the context window). `truncated` for "length" and "budget"."""

    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_truncated: int = 0  # tool outputs the toolbox cut
    truncated: bool = False
    finish_reason: str | None = None


@dataclass
class Episodes:
    """One row per episode, grouped by prompt like `Rollouts` (rows 0..n-1 are prompt 0). `completion_ids` is
    everything after the prompt (model turns and tool segments), right-padded; `attention_mask` is 1 on all its
    tokens, `loss_mask` on the model's own tokens only; `logprobs` are the sampler's, 0 where loss_mask is 0."""

    prompt_index: list[int]
    prompt_ids: list[list[int]]
    completion_ids: Tensor  # LongTensor [N, T]
    attention_mask: Tensor  # [N, T]
    loss_mask: Tensor  # [N, T]
    logprobs: Tensor  # float32 [N, T]
    texts: list[str]  # the decoded completion (model turns and tool results), special tokens dropped
    answers: list[str]  # the text of each episode's last model turn
    info: list[EpisodeInfo]
    pad_token_id: int = 0

    def __len__(self) -> int:
        return len(self.prompt_index)

    def to_rollouts(self) -> Rollouts:
        """The episodes as a `Rollouts` batch for the RL update: `completion_mask` the attention mask,
        `loss_mask` the model's tokens; finish reason "length" for a truncated episode (so
        algorithm.mask_truncated drops it), else "stop"; `texts` the last model turn (what the rewards score:
        the final answer, never a tool's output); `extras` per row: turns, tool_calls, tool_errors,
        tool_truncated, episode_finish (EpisodeInfo.finish_reason) and episode_text (the whole completion)."""
        extras = [
            {
                "turns": i.turns,
                "tool_calls": i.tool_calls,
                "tool_errors": i.tool_errors,
                "tool_truncated": i.tool_truncated,
                "episode_finish": i.finish_reason,
                "episode_text": text,
            }
            for i, text in zip(self.info, self.texts, strict=True)
        ]
        return Rollouts(
            prompt_index=list(self.prompt_index),
            prompt_ids=list(self.prompt_ids),
            completion_ids=self.completion_ids,
            completion_mask=self.attention_mask,
            logprobs=self.logprobs,
            finish_reasons=["length" if i.truncated else "stop" for i in self.info],
            texts=list(self.answers),
            pad_token_id=self.pad_token_id,
            loss_mask=self.loss_mask,
            extras=extras,
        )


@dataclass
class _Live:
    prompt: int
    tokens: list[int]  # the whole sequence so far, prompt included
    prompt_len: int
    loss: list[int] = field(default_factory=list)  # per token after the prompt
    logps: list[float] = field(default_factory=list)
    answer: str = ""
    info: EpisodeInfo = field(default_factory=EpisodeInfo)

    def append(self, ids: Sequence[int], logps: Sequence[float] | None) -> None:
        self.tokens.extend(ids)
        self.loss.extend([1 if logps is not None else 0] * len(ids))
        self.logps.extend(logps if logps is not None else [0.0] * len(ids))

    def end(self, reason: str, truncated: bool = False) -> None:
        self.info.finish_reason, self.info.truncated = reason, truncated


class ToolFormat:
    """How prompts and tool results are written for one tokenizer + toolbox, through r1lab.tools.render (the
    template's `tools=` support, or the tagged fallback)."""

    def __init__(self, tokenizer: Any, toolbox: Any) -> None:
        from r1lab.tools.render import supports_tools

        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template", fix="use a chat model (or set a template)")
        self.tokenizer, self.toolbox = tokenizer, toolbox
        self.native = supports_tools(tokenizer)
        self._base = [{"role": "user", "content": _USER}, {"role": "assistant", "content": _MARK}]
        self._base_text = self._render(self._base, generation_prompt=False)
        # what the template writes after an assistant turn's text (e.g. "<|im_end|>\n")
        self.closer = self._base_text[self._base_text.index(_MARK) + len(_MARK) :]

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """The first turn's token ids for chat `messages`, with the tool schemas or the fallback instructions."""
        return self._ids(self._render(messages, generation_prompt=True))

    def segment(self, results: list[tuple[str, str]], last_token: int) -> list[int]:
        """Token ids appended after a model turn whose last token is `last_token`: the rest of the turn's
        closing, the tool messages ((name, content) pairs) and the next assistant prompt."""
        tools = [{"role": "tool", "name": name, "content": text} for name, text in results]
        full = self._render(self._base + tools, generation_prompt=True)
        if not full.startswith(self._base_text):
            raise UserError(
                "the chat template rewrites earlier turns when a tool message is added, so tool results cannot "
                "be appended without re-tokenising the episode",
                where="the tokenizer's chat_template",
                fix="use a template that renders each message on its own (ChatML-like)",
            )
        closing = self.closer
        if last_token in self.tokenizer.all_special_ids:  # e.g. the model's <|im_end|> already closed it
            said = self.tokenizer.decode([last_token], skip_special_tokens=False)
            closing = closing[len(said) :] if closing.startswith(said) else closing
        return self._ids(closing + full[len(self._base_text) :])

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        from r1lab.tools.render import render_with_tools

        try:
            return render_with_tools(self.tokenizer, messages, self.toolbox, generation_prompt)
        except Exception as e:  # jinja raises its own errors (e.g. a role the template refuses)
            raise UserError(
                f"the chat template cannot render a tool conversation: {e}",
                where="the tokenizer's chat_template",
                fix="use a template with a tool role, or one without tool support (the tagged fallback)",
            ) from e

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def run_episodes(
    engine: RolloutEngine,
    tokenizer: Any,
    toolbox: Any,
    prompt_ids: list[list[int]],
    n: int,
    sampling: SamplingParams,
    *,
    max_turns: int,
    max_episode_tokens: int | None = None,
    fmt: ToolFormat | None = None,
    parse: Callable[[str], list[ToolCall]] | None = None,
) -> Episodes:
    """Run n episodes per prompt (token ids, e.g. from `ToolFormat.prompt_ids`); see the module docstring.

    `sampling.max_new_tokens` bounds each turn; "</tool_call>" is added to its stop strings, so a turn ends
    right after a call. `parse` defaults to `r1lab.tools.parse_tool_calls`; `toolbox.run(call)` runs a call
    (a malformed one included: its ToolResult carries the error text that goes back to the model)."""
    if max_turns < 1:
        raise UserError(f"max_turns must be at least 1, got {max_turns}", where="rollout.max_turns")
    if parse is None:
        from r1lab.tools.calls import parse_tool_calls as parse
    fmt = fmt or ToolFormat(tokenizer, toolbox)
    budget = _budget(engine, max_episode_tokens)
    for i, p in enumerate(prompt_ids):
        if len(p) >= budget:
            raise UserError(
                f"prompt {i} has {len(p)} tokens, leaving no room in an episode of at most {budget} tokens "
                "(max_episode_tokens, or the model's context)",
                where="rollout.max_episode_tokens / data.max_length",
                fix="raise max_episode_tokens (up to the context) or drop long prompts",
            )
    stop = sampling.stop if TOOL_STOP in sampling.stop else (*sampling.stop, TOOL_STOP)
    episodes = [_Live(i, list(p), len(p)) for i, p in enumerate(prompt_ids) for _ in range(n)]
    for turn in range(max_turns):
        live = [e for e in episodes if e.info.finish_reason is None]
        # turn 0 runs prompts (n samples each, sharing a prefill); later turns run episodes one sample each
        units = (
            [episodes[i * n : (i + 1) * n] for i in range(len(prompt_ids))]
            if turn == 0
            else [[e] for e in live]
        )
        by_room: dict[int, list[list[_Live]]] = {}
        for unit in units:
            room = budget - len(unit[0].tokens)
            if room <= 0:
                for e in unit:
                    e.end("budget", truncated=True)
                continue
            by_room.setdefault(min(sampling.max_new_tokens, room), []).append(unit)
        for k, (max_new, group) in enumerate(sorted(by_room.items())):
            seed = None if sampling.seed is None else (sampling.seed + 1_000_003 * turn + 7919 * k) % 2**63
            params = replace(sampling, max_new_tokens=max_new, stop=stop, seed=seed)
            out = engine.generate([u[0].tokens for u in group], len(group[0]), params)
            rows = [e for u in group for e in u]
            for r, e in enumerate(rows):
                length = int(out.completion_mask[r].sum())
                ids = out.completion_ids[r, :length].tolist()
                e.append(ids, out.logprobs[r, :length].tolist())
                e.info.turns += 1
                e.answer = out.texts[r]
                cut = max_new < sampling.max_new_tokens  # this turn was shortened by the budget
                _after_turn(e, ids, out.finish_reasons[r], cut, fmt, parse, budget, max_turns)
    return _collect(episodes, tokenizer, engine)


def _after_turn(
    e: _Live,
    ids: list[int],
    finish: str,
    room_cut: bool,
    fmt: ToolFormat,
    parse: Callable,
    budget: int,
    max_turns: int,
) -> None:
    """End the episode after this turn, or run its tool calls and append the tool segment."""
    if finish == "length":
        e.end("budget" if room_cut else "length", truncated=True)
        return
    calls = parse(e.answer)
    if not calls:
        e.end("answer")
        return
    e.info.tool_calls += len(calls)
    if e.info.turns >= max_turns:  # the last allowed turn called a tool: not run, nothing appended
        e.end("max_turns")
        return
    results = []
    for call in calls:
        result = _run(fmt.toolbox, call)
        e.info.tool_errors += int(bool(result.error))
        e.info.tool_truncated += int(bool(getattr(result, "truncated", False)))
        results.append((call.name or "error", result.content))
    segment = fmt.segment(results, ids[-1] if ids else -1)
    if len(e.tokens) + len(segment) >= budget:  # no room left for a model token after it
        e.end("budget", truncated=True)
        return
    e.append(segment, None)


@dataclass
class _Failed:
    content: str
    error: bool = True
    truncated: bool = False


def _run(toolbox: Any, call: Any) -> Any:
    """The toolbox's result; a tool box that raises becomes an error message, never a crashed run."""
    try:
        return toolbox.run(call)
    except Exception as e:
        return _Failed(f"error: the tool {call.name!r} failed: {type(e).__name__}: {e}")


def _budget(engine: Any, max_episode_tokens: int | None) -> int:
    """Tokens an episode may hold in all: max_episode_tokens, and never more than the model's context."""
    config = getattr(getattr(engine, "model", None), "config", None)
    context = getattr(config, "max_position_embeddings", None)
    limits = [x for x in (max_episode_tokens, context) if x]
    if max_episode_tokens is not None and max_episode_tokens < 1:
        raise UserError(f"max_episode_tokens must be positive, got {max_episode_tokens}", where="rollout")
    return min(limits) if limits else 2**31


def _collect(episodes: list[_Live], tokenizer: Any, engine: Any) -> Episodes:
    pad = getattr(engine, "pad_token_id", None)
    pad = int(pad if pad is not None else (tokenizer.pad_token_id or 0))
    width = max((len(e.loss) for e in episodes), default=0)
    ids = torch.full((len(episodes), width), pad, dtype=torch.long)
    attention = torch.zeros((len(episodes), width), dtype=torch.long)
    loss = torch.zeros((len(episodes), width), dtype=torch.long)
    logps = torch.zeros((len(episodes), width), dtype=torch.float32)
    for r, e in enumerate(episodes):
        t = len(e.loss)
        ids[r, :t] = torch.tensor(e.tokens[e.prompt_len :], dtype=torch.long)
        attention[r, :t] = 1
        loss[r, :t] = torch.tensor(e.loss, dtype=torch.long)
        logps[r, :t] = torch.tensor(e.logps, dtype=torch.float32)
    texts = tokenizer.batch_decode([e.tokens[e.prompt_len :] for e in episodes], skip_special_tokens=True)
    return Episodes(
        prompt_index=[e.prompt for e in episodes],
        prompt_ids=[e.tokens[: e.prompt_len] for e in episodes],
        completion_ids=ids,
        attention_mask=attention,
        loss_mask=loss,
        logprobs=logps * loss,
        texts=texts,
        answers=[e.answer for e in episodes],
        info=[e.info for e in episodes],
        pad_token_id=pad,
    )
