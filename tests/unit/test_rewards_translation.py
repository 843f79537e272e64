"""The `translation` reward (MT-R1-Zero): format check, sacrebleu's own sentence scores, −2 for bad format,
and the `tool_call_penalty` term."""

from __future__ import annotations

import pytest
import sacrebleu

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import load_reward


def score(name: str, completion: str, kwargs: dict | None = None, **columns) -> float | None:
    return load_reward(RewardSpec(name=name, kwargs=kwargs or {}))(completion, prompt="q", **columns)


HYP, REF = "the cat sat on the mat", "the cat is on the mat"


def tagged(translation: str) -> str:
    return f"<think>Word by word: le chat ...</think>\n<translate>{translation}</translate>"


def test_bleu_and_chrf_are_sacrebleus_sentence_scores_plus_the_format_point() -> None:
    bleu = sacrebleu.sentence_bleu(HYP, [REF]).score
    chrf = sacrebleu.sentence_chrf(HYP, [REF]).score
    assert 0 < bleu < 100 and 0 < chrf < 100
    assert score("translation", tagged(HYP), answer=REF) == pytest.approx(1 + bleu / 100)
    assert score("translation", tagged(HYP), {"metric": "chrf"}, answer=REF) == pytest.approx(1 + chrf / 100)
    # a one-sentence corpus: sacrebleu's corpus chrF is the sentence chrF
    assert chrf == pytest.approx(sacrebleu.corpus_chrf([HYP], [[REF]]).score)


def test_perfect_translation_scores_two_and_several_references_take_the_best_ngrams() -> None:
    assert score("translation", tagged(REF), answer=REF) == pytest.approx(2.0)
    refs = [REF, HYP]
    assert score("translation", tagged(HYP), answer=refs) == pytest.approx(2.0)
    expected = sacrebleu.sentence_bleu("the cat", ["the cat is on the mat", "a cat"]).score
    assert score(
        "translation", tagged("the cat"), answer=["the cat is on the mat", "a cat"]
    ) == pytest.approx(1 + expected / 100)


def test_chinese_tokenizer_changes_bleu() -> None:
    hyp, ref = "猫坐在垫子上", "猫在垫子上"
    zh = sacrebleu.sentence_bleu(hyp, [ref], tokenize="zh").score
    assert score("translation", tagged(hyp), {"tokenize": "zh"}, answer=ref) == pytest.approx(1 + zh / 100)
    assert score("translation", tagged(hyp), answer=ref) != pytest.approx(1 + zh / 100)  # 13a: one token


BAD_FORMAT = [
    HYP,  # no tags
    f"<translate>{HYP}</translate>",  # no think
    "<think>x</think>",  # no translation
    "<think>x</think><translate>  </translate>",  # empty translation
    f"<translate>{HYP}</translate><think>x</think>",  # wrong order
    f"<think>x</think><translate>{HYP}</translate> trailing words",
    f"<think>x</think><translate>a</translate><translate>{HYP}</translate>",  # two translations
]


@pytest.mark.parametrize("completion", BAD_FORMAT)
def test_invalid_format_is_minus_two(completion: str) -> None:
    reward = load_reward(RewardSpec(name="translation"))
    assert reward(completion, prompt="q", answer=REF) == -2.0
    assert reward.fn.parses(completion, format="think_translate") is False


def test_answer_line_format() -> None:
    bleu = sacrebleu.sentence_bleu(HYP, [REF]).score
    good = f"le chat = the cat\nAnswer: {HYP}"
    assert score("translation", good, {"format": "answer"}, answer=REF) == pytest.approx(1 + bleu / 100)
    assert score("translation", f"Answer: {HYP}\nthat is all", {"format": "answer"}, answer=REF) == -2.0
    assert score("translation", tagged(HYP), {"format": "answer"}, answer=REF) == -2.0


def test_missing_reference_does_not_apply_and_bad_options_fail_at_load() -> None:
    assert score("translation", tagged(HYP), answer=None) is None
    for kwargs in (
        {"metric": "comet"},
        {"format": "xml"},
        {"metric": "chrf", "tokenize": "zh"},
        {"tokenize": "x"},
    ):
        with pytest.raises(UserError):
            load_reward(RewardSpec(name="translation", kwargs=kwargs))


TOOL_CASES = [
    (0, {}, 0.0),
    (1, {}, 0.0),
    (3, {}, -0.2),
    (5, {"allowed": 2, "penalty": 0.5}, -1.5),
    (2, {"allowed": 0, "penalty": 1}, -2.0),
]


@pytest.mark.parametrize(("calls", "kwargs", "expected"), TOOL_CASES)
def test_tool_call_penalty_per_excess_call(calls: int, kwargs: dict, expected: float) -> None:
    assert score("tool_call_penalty", "Answer: 4", kwargs, tool_calls=calls) == pytest.approx(expected)


def test_tool_call_penalty_without_count_and_bad_values() -> None:
    assert score("tool_call_penalty", "Answer: 4") is None  # a single-turn episode: the term does not apply
    with pytest.raises(ValueError, match="tool_calls"):
        score("tool_call_penalty", "Answer: 4", tool_calls=-1)
    for kwargs in ({"allowed": -1}, {"penalty": -0.1}, {"allowed": 1.5}, {"tool_calls": 3}):
        with pytest.raises(UserError):
            load_reward(RewardSpec(name="tool_call_penalty", kwargs=kwargs))


def test_through_the_isolated_runner_with_the_episodes_tool_calls() -> None:
    from r1lab.rewards import RewardRunner

    specs = [
        RewardSpec(name="translation", kwargs={"metric": "chrf"}),
        RewardSpec(name="tool_call_penalty", kwargs={"allowed": 1, "penalty": 0.25}),
    ]
    chrf = sacrebleu.sentence_chrf(HYP, [REF]).score
    columns = [{"answer": REF, "tool_calls": 3}, {"answer": REF, "tool_calls": 0}, {"answer": REF}]
    with RewardRunner(specs, isolated=True) as runner:
        batch = runner.score([tagged(HYP), HYP, tagged(REF)], ["q"] * 3, columns)
    assert batch.per_function["translation"] == pytest.approx([1 + chrf / 100, -2.0, 2.0])
    assert batch.per_function["tool_call_penalty"] == [-0.5, 0.0, None]
    assert batch.total.tolist() == pytest.approx([1 + chrf / 100 - 0.5, -2.0, 2.0])
    assert batch.failures == {"translation": 0, "tool_call_penalty": 0}
