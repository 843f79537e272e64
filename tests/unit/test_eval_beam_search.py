"""PRM-guided step-level beam search (eval/beam_search.py): the bookkeeping on a scripted expansion and a scoring
function whose scores are written in the steps (widths, rounds, stop, token counts, the final pick), and the HF
engine's expansion on the tiny model. End to end: tests/integration/test_eval_beam_cli.py."""

from __future__ import annotations

import pytest

from r1lab.errors import UserError
from r1lab.eval.beam_search import BeamOptions, Step, search

# a beam's text -> the samples of its next step, in order: "d." is a step scored d that goes on, "d!" ends (EOS)
TABLE = {
    "": ["1.", "3.", "2.", "0."],
    "3.": ["5!", "1."],
    "2.": ["4.", "6!"],
    "2.4.": ["9!", "0."],
}


class Scripted:
    """Expand from TABLE (a text not in it ends with "7!"), one token per character; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, str, int]], int]] = []

    def __call__(self, beams: list[tuple[int, str, int]], n: int) -> list[list[Step]]:
        self.calls.append((beams, n))
        out = []
        for _, text, _ in beams:
            steps = TABLE.get(text, ["7!"] * n)
            assert len(steps) == n
            out.append([Step(s, len(s), s.endswith("!")) for s in steps])
        return out


def digit_scores(items: list[tuple[int, str]]) -> list[tuple[list[float], int]]:
    """Each step's score is its digit; tokens read: the text's characters."""
    return [([float(c) for c in text if c.isdigit()], len(text)) for _, text in items]


def test_last_step_score_search_by_hand():
    expand = Scripted()
    out = search(1, expand, digit_scores, BeamOptions(width=2, per_expand=2, max_new_tokens=100))
    # round 1: the root gets W*S = 4 samples, keep "3." and "2."; round 2: "3.5!" 5, "3.1." 1, "2.4." 4,
    # "2.6!" 6 -> keep "2.6!" and "3.5!", both ended: no live beam, the search stops
    assert [n for _, n in expand.calls] == [4, 2]
    assert [[t for _, t, _ in beams] for beams, _ in expand.calls] == [[""], ["3.", "2."]]
    assert [left for _, _, left in expand.calls[1][0]] == [98, 98]  # 100 - the 2 tokens of "3." / "2."
    assert out.live == [[1, 2]]
    assert [b.text for b in out.finished[0]] == ["2.6!", "3.5!"]
    assert out.best[0].text == "2.6!" and out.best[0].score == 6.0 and out.best[0].steps == 2
    assert out.best[0].tokens == 4
    assert out.tokens_generated == 4 * 2 + 4 * 2  # every sampled step's tokens, kept or not
    assert out.tokens_scored == 4 * 2 + 4 * 4 and out.candidates == 8


def test_min_step_score_search_by_hand():
    expand = Scripted()
    out = search(1, expand, digit_scores, BeamOptions(width=2, per_expand=2, max_new_tokens=100, score="min"))
    # round 2 by the lowest step: "3.5!" 3, "3.1." 1, "2.4." 2, "2.6!" 2 -> "3.5!" (ends) and "2.4." (tie with
    # "2.6!", sampled first); round 3: "2.4.9!" 2 (ends), "2.4.0." 0; round 4: "2.4.0.7!" twice, both end
    assert [n for _, n in expand.calls] == [4, 2, 2, 2] and out.live == [[1, 2, 1, 1]]
    assert [b.text for b in out.finished[0]] == ["3.5!", "2.4.9!", "2.4.0.7!", "2.4.0.7!"]
    assert out.best[0].text == "3.5!" and out.best[0].score == 3.0
    generated = 8 + 8 + 4 + 4
    assert out.tokens_generated == generated and out.candidates == 4 + 4 + 2 + 2
    assert out.tokens_scored == 4 * 2 + 4 * 4 + 2 * 6 + 2 * 8


def test_the_token_budget_ends_beams_and_problems_are_searched_together():
    expand = Scripted()
    out = search(2, expand, digit_scores, BeamOptions(width=2, per_expand=2, max_new_tokens=3))
    # round 2: 2 tokens left after "3." / "2." ... of a 3-token budget, 1 is left; every candidate reaches it
    assert [left for _, _, left in expand.calls[1][0]] == [1, 1, 1, 1]
    assert [p for p, _, _ in expand.calls[1][0]] == [0, 0, 1, 1]  # one expand call for both problems
    assert out.live == [[1, 2], [1, 2]] and len(expand.calls) == 2
    assert [b.text for b in out.best] == ["2.6!", "2.6!"]
    assert [b.text for b in out.finished[1]] == ["2.6!", "3.5!"]
    with pytest.raises(UserError, match="--beam-width must be at least 1"):
        BeamOptions(width=0)
    with pytest.raises(UserError, match="--beam-score 'mean'"):
        BeamOptions(score="mean")


def test_engine_expansion_stops_at_the_separator_and_the_budget(tiny_model_dir):
    from r1lab.config import ModelConfig
    from r1lab.eval.beam_search import engine_expand
    from r1lab.models import load_model
    from r1lab.rollout import SamplingParams
    from r1lab.rollout.hf import HFEngine

    model, tok = load_model(ModelConfig(path=str(tiny_model_dir)), trainable=False)
    prompt = tok("<|im_start|>user\nsay 1<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    expand = engine_expand(HFEngine(model, tok, seed=3), tok, [prompt["input_ids"]], ".", SamplingParams())
    steps = expand([(0, "", 3), (0, "A", 40)], 8)
    assert [len(s) for s in steps] == [8, 8]
    for s in steps[0]:  # a budget of 3 tokens
        assert (s.kept or s.generated) <= 3 and (s.ended or s.text.endswith("."))
    for s in steps[1]:
        assert s.kept is None and s.generated <= 40
        ends_step = s.text.endswith(".")
        assert ends_step != s.ended or s.generated == 40  # a step ends at "." only; else EOS or budget
    assert any(s.text.endswith(".") for s in steps[1]) and any(s.kept == 3 for s in steps[0])


def test_batched_step_scores_equal_one_at_a_time(tmp_path, tiny_tokenizer):
    """score_steps_batch (right-padded rows of different lengths) gives each row's score_steps and its length."""
    from r1lab.data.prm_data import step_ids
    from r1lab.eval.scaling import prm_step_scores
    from r1lab.rewards.reward_model_io import load_reward_model, score_steps
    from tiny import build_reward_model

    folder = build_reward_model(tmp_path / "prm", tiny_tokenizer, seed=2, kind="prm", step_sep="\n")
    scorer = load_reward_model(folder, kinds=("prm",))
    items = [("Add 1.", "1 + 1 = 2\nAnswer: 2"), ("Say hi.", "hi"), ("Add 12 and 7.", "2 + 7 = 9\n1\n19\n")]
    got = prm_step_scores(scorer, items, batch_size=3)
    assert [len(s) for s, _ in got] == [2, 1, 3]  # no separator: one step; a trailing one ends the last step
    for (prompt, text), (scores, read) in zip(items, got, strict=True):
        steps = text.splitlines(keepends=True)
        assert scores == pytest.approx(score_steps(*scorer[:2], prompt, steps), abs=1e-5)
        ids, _ = step_ids(tiny_tokenizer, [{"role": "user", "content": prompt}], steps, "\n")
        assert read == len(ids)
