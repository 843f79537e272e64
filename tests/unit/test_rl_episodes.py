"""rollout.tools in the RL stage (r1lab.stages.rl_episodes): a run on the lookup task whose episodes call the
BM25 `search` tool over the task's corpus, with scripted turns whose log-probs are the policy's own (so the counts
of calls, errors, turns and trained tokens are known), and the bad combinations refused."""

from __future__ import annotations

import json

import pytest
import torch
from rl_testkit import read_metrics, rl_config, single_thread
from transformers import AutoTokenizer

from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.rollout import Rollouts
from r1lab.stages.rl import run_rl
from r1lab.stages.rl_checks import check_names
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.tasks.lookup import LookupTask, write_lookup_corpus
from tiny import build_model

IM_END = "<|im_end|>"
SIZES = {"people": 12, "companies": 4, "cities": 3, "countries": 2}
FIRST_TURNS = [  # by sample index within a group: (text, calls, errors, turns)
    ('<tool_call>{"name": "search", "arguments": {"query": "company city"}}</tool_call>', 1, 0, 2),
    ('<tool_call>{"name": "search", "arguments": </tool_call>', 1, 1, 2),  # not JSON
    ("Answer: Nowhere" + IM_END, 0, 0, 1),  # answers at once
    ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', 1, 1, 2),  # an unknown tool
]
LAST_TURN = "I could not find it.\nAnswer: Nowhere" + IM_END


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny model with a 4096-token context: the tool instructions make the prompts ~750 tokens."""
    path = tmp_path_factory.mktemp("tiny-long")
    build_model(path, tiny_tokenizer, max_position_embeddings=4096)
    return path


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ScriptedPolicy:
    """An engine writing FIRST_TURNS[j] as sample j's first turn and LAST_TURN after a tool result, with the
    policy's own log-probs of those tokens (so the update is on-policy)."""

    name = "hf"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.pad_token_id = tokenizer.pad_token_id

    def generate(self, prompt_ids, n, sampling):
        rows = []
        for p in prompt_ids:
            first = self.tokenizer.decode(p).count("<|im_start|>assistant") == 1
            rows += [_ids(self.tokenizer, FIRST_TURNS[j][0] if first else LAST_TURN) for j in range(n)]
        width = max(map(len, rows))
        tokens = torch.full((len(rows), width), self.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            tokens[r, : len(ids)], mask[r, : len(ids)] = torch.tensor(ids), 1
        index = [i for i in range(len(prompt_ids)) for _ in range(n)]
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in rows]
        out = Rollouts(
            index, [prompt_ids[i] for i in index], tokens, mask, mask * 0.0, ["stop"] * len(rows), texts
        )
        with torch.no_grad():
            out.logprobs = completion_logprobs(
                self.model, self.model, out, "cpu", sampling.temperature or 1.0
            )[0]
        return out

    def update_weights(self, model):
        pass


def _lookup_config(tmp_path, model_dir, steps=1, **rollout):
    data = write_jsonl(tmp_path / "lookup.jsonl", LookupTask().generate(4, seed=0, **SIZES))
    corpus = write_lookup_corpus(tmp_path / "corpus.jsonl", seed=0, **SIZES)
    return rl_config(
        tmp_path,
        model_dir,
        {
            "data": {"path": str(data), "format": "auto", "max_length": 2048},
            "rewards": [{"name": "exact"}, {"name": "tool_call_penalty", "kwargs": {"allowed": 0}}],
            "rollout": {"n": 4, "max_new_tokens": 40, "tools": [{"name": "search", "corpus": str(corpus)}]}
            | rollout,
            "train": {"max_steps": steps, "batch_size": 8},
        },
    )


def test_lookup_episodes_with_search_train_and_log_tool_metrics(tmp_path, long_model_dir, monkeypatch):
    import r1lab.rollout

    monkeypatch.setattr(
        r1lab.rollout, "make_engine", lambda cfg, model, tok, seed=0: ScriptedPolicy(model, tok)
    )
    cfg = _lookup_config(tmp_path, long_model_dir, max_turns=3)
    run_rl(cfg)
    (m,) = read_metrics(tmp_path / "run")
    n = len(FIRST_TURNS)
    assert m["tools/tool_calls_per_episode"] == sum(t[1] for t in FIRST_TURNS) / n == 0.75
    assert m["tools/tool_errors_per_episode"] == sum(t[2] for t in FIRST_TURNS) / n == 0.5
    assert m["tools/turns_per_episode"] == sum(t[3] for t in FIRST_TURNS) / n == 1.75
    assert m["tools/finish/answer"] == 1.0 and m["tools/tool_truncated_per_episode"] == 0.0
    # tool_call_penalty (allowed 0) saw each episode's calls: -0.1 for the three that called
    assert m["reward/tool_call_penalty/mean"] == pytest.approx(-0.075)
    # every row trained (advantages != 0), on the model's tokens only: the tool results are not counted
    tok = AutoTokenizer.from_pretrained(long_model_dir)
    per_group = sum(
        len(_ids(tok, t[0])) + (len(_ids(tok, LAST_TURN)) if t[3] == 2 else 0) for t in FIRST_TURNS
    )
    assert m["tokens_trained"] == cfg.prompts_per_step * per_group
    assert m["completion_length/mean"] == per_group / n
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert (
        samples[0]["completion"] == "I could not find it.\nAnswer: Nowhere"
    )  # the last turn: what is scored
    assert "<tool_response>" in samples[0]["episode_text"] and "(id d" in samples[0]["episode_text"]
    assert "not valid JSON" in samples[1]["episode_text"] and "fly" in samples[3]["episode_text"]
    assert samples[2]["episode_text"] == "Answer: Nowhere" and samples[2]["tool_calls"] == 0
    assert (tmp_path / "run" / "final" / "config.json").exists()


def test_max_turns_ends_the_episodes_that_still_call_a_tool(tmp_path, long_model_dir, monkeypatch):
    """max_turns 1: the three calling episodes end on their call (not run), the one answering at once ends
    on its answer; only the first turns are trained."""
    import r1lab.rollout

    monkeypatch.setattr(
        r1lab.rollout, "make_engine", lambda cfg, model, tok, seed=0: ScriptedPolicy(model, tok)
    )
    cfg = _lookup_config(tmp_path, long_model_dir, max_turns=1)
    run_rl(cfg)
    (m,) = read_metrics(tmp_path / "run")
    assert m["tools/turns_per_episode"] == 1.0 and m["tools/finish/max_turns"] == 0.75
    assert m["tools/finish/answer"] == 0.25 and m["tools/tool_calls_per_episode"] == 0.75
    assert m["tools/tool_errors_per_episode"] == 0.0  # a call past the turn limit is not run
    tok = AutoTokenizer.from_pretrained(long_model_dir)
    assert m["tokens_trained"] == cfg.prompts_per_step * sum(len(_ids(tok, t[0])) for t in FIRST_TURNS)


def test_the_held_out_eval_runs_one_greedy_episode_per_prompt(tmp_path, long_model_dir, monkeypatch):
    """Greedy: one sample per prompt, the script's first (a valid search, then the wrong answer)."""
    import r1lab.rollout

    monkeypatch.setattr(
        r1lab.rollout, "make_engine", lambda cfg, model, tok, seed=0: ScriptedPolicy(model, tok)
    )
    cfg = _lookup_config(tmp_path, long_model_dir, max_turns=3)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"eval_fraction": 0.5})})
    run_rl(cfg)
    step, held = read_metrics(tmp_path / "run")
    assert held["eval/num_problems"] == 2 and held["eval/accuracy"] == 0.0
    assert held["eval/tools/tool_calls_per_episode"] == 1.0 and held["eval/tools/turns_per_episode"] == 2.0
    assert held["eval/tools/finish/answer"] == 1.0 and held["eval/tools/tool_errors_per_episode"] == 0.0
    assert held["eval/reward/tool_call_penalty"] == pytest.approx(-0.1)  # one call, allowed 0
    tok = AutoTokenizer.from_pretrained(long_model_dir)
    assert held["eval/mean_length"] == len(_ids(tok, FIRST_TURNS[0][0])) + len(_ids(tok, LAST_TURN))
    assert "tools/tool_calls_per_episode" in step


def test_a_real_engine_runs_episodes_in_the_loop(tmp_path, long_model_dir):
    """The tiny random model seldom writes a call; the run still goes through the episode path end to end."""
    cfg = _lookup_config(tmp_path, long_model_dir, max_turns=2, max_episode_tokens=1200)
    run_rl(cfg)
    (m,) = read_metrics(tmp_path / "run")
    assert m["tools/turns_per_episode"] >= 1 and "tools/tool_errors_per_episode" in m


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rollout": {"engine": "vllm", "tools": ["calculator"]}}, "only supported"),
    ],
)
def test_unsupported_combinations_are_refused(tmp_path, tiny_model_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        check_names(rl_config(tmp_path, tiny_model_dir, overrides))


@pytest.mark.parametrize(
    ("rollout", "message"),
    [({"max_turns": 2}, "rollout.tools is empty"), ({"tools": ["calculator"], "max_turns": 0}, "max_turns")],
)
def test_episode_keys_without_tools_or_below_one_are_refused(tmp_path, tiny_model_dir, rollout, message):
    with pytest.raises(UserError, match=message):
        rl_config(tmp_path, tiny_model_dir, {"rollout": rollout})


def test_an_unknown_tool_is_refused_before_any_rollout(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"tools": ["telepathy"]}})
    with pytest.raises(UserError, match="telepathy"):
        run_rl(cfg)
    assert not (tmp_path / "run").exists()


def test_doctor_rolls_out_episodes_and_checks_the_model_tokens(tmp_path, long_model_dir):
    """`r1lab doctor` on a tools config: its rollout is episodes (the real engine), and the sampler-vs-trainer
    log-prob check passes over the model's tokens (tool results carry no sampler log-prob)."""
    from r1lab.doctor.rl import rl_checks

    checks = {c.name: c for c in rl_checks(_lookup_config(tmp_path, long_model_dir, max_turns=2), None)}
    logprobs = checks["sampler vs trainer log-probs"]
    assert logprobs.status == "ok", logprobs.summary
    assert not any(c.failed for c in checks.values()), [c.summary for c in checks.values() if c.failed]


def test_async_rollouts_run_episodes_too(tmp_path, long_model_dir, monkeypatch):
    """rollout.async: the background sampler (a copy of the policy) is wrapped in the episode engine as well."""
    import r1lab.rollout

    monkeypatch.setattr(
        r1lab.rollout, "make_engine", lambda cfg, model, tok, seed=0: ScriptedPolicy(model, tok)
    )
    cfg = _lookup_config(tmp_path, long_model_dir, steps=2, max_turns=3, **{"async": True})
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["tools/tool_calls_per_episode"] for m in metrics] == [0.75, 0.75]
    assert [m["async/staleness"] for m in metrics] == [0, 1]
