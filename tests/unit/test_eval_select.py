"""Test-time selection (eval/select.py) and the scaling curves (eval/scaling.py) on hand-computed cases."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from r1lab.errors import UserError
from r1lab.eval.metrics import maj_at_k
from r1lab.eval.scaling import parse_n_curve, parse_selects, scaling_curves, scaling_markdown
from r1lab.eval.select import (
    AT_K,
    best_of_n_at_k,
    best_of_n_correct,
    prm_aggregate,
    sigmoid,
    vote_at_k,
    weighted_majority_at_k,
    weighted_majority_correct,
)


def test_sigmoid_is_stable_and_symmetric():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(2.0) == pytest.approx(1 / (1 + math.exp(-2)))
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0


def test_majority_tie_counts_half_and_none_does_not_vote():
    # "7" twice (right), "8" twice (wrong), None three times: a 2-2 tie -> 0.5
    answers = ["7", "8", None, "7", None, "8", None]
    correct = [True, False, False, True, False, False, False]
    assert maj_at_k(answers, correct, 7) == 0.5
    # k = 2 over the 21 pairs, by hand: both "7" -> 1 pair right; a "7" with None -> 2*3 = 6 right;
    # "7" with "8" -> 4 pairs tied -> 0.5 each = 2; the rest score 0. (1 + 6 + 2) / 21
    assert maj_at_k(answers, correct, 2) == pytest.approx(9 / 21)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_vectorised_majority_equals_maj_at_k(k):
    answers = ["7", "8", None, "7", None, "8", "9"]
    correct = [True, False, False, True, False, False, False]
    assert AT_K["majority"](answers, None, correct, k) == pytest.approx(
        maj_at_k(answers, correct, k), abs=1e-12
    )


def test_monte_carlo_regime_is_close_to_exact_enumeration():
    """C(18, 9) = 48620 subsets > 5000: the seeded random subsets estimate the exact mean within 0.02."""
    answers = [str(i % 4) if i % 5 else None for i in range(18)]
    scores = [math.sin(i) for i in range(18)]
    correct = [a == "1" for a in answers]
    exact = _brute(
        lambda s: weighted_majority_correct(
            [answers[i] for i in s], [scores[i] for i in s], [correct[i] for i in s]
        ),
        18,
        9,
    )
    assert weighted_majority_at_k(answers, scores, correct, 9) == pytest.approx(exact, abs=0.02)
    assert weighted_majority_at_k(answers, scores, correct, 9, seed=0) == weighted_majority_at_k(
        answers, scores, correct, 9, seed=0
    )
    assert vote_at_k([None, None], [1.0, 1.0], [False, False], 1) == 0.0


def test_best_of_n_picks_the_highest_score_and_splits_ties():
    assert best_of_n_correct([0.1, 2.0, -1.0], [False, True, False]) == 1.0
    assert best_of_n_correct([0.1, 2.0, -1.0], [True, False, True]) == 0.0
    assert best_of_n_correct([3.0, 3.0, 1.0, 3.0], [True, False, True, False]) == pytest.approx(1 / 3)


def test_weighted_majority_by_summed_sigmoid():
    # "a": sigmoid(2) = 0.881 (one vote, wrong); "b": 2 * sigmoid(-1) = 0.538 (two votes, right)
    answers, scores = ["a", "b", "b"], [2.0, -1.0, -1.0]
    assert weighted_majority_correct(answers, scores, [False, True, True]) == 0.0
    # with "b" at score 0: 2 * 0.5 = 1.0 > 0.881 -> "b" wins where plain majority also would
    assert weighted_majority_correct(answers, [2.0, 0.0, 0.0], [False, True, True]) == 1.0
    # a None answer carrying the largest score does not vote
    assert weighted_majority_correct([None, "b"], [9.0, -3.0], [False, True]) == 1.0
    # equal weights tie -> half
    assert weighted_majority_correct(["a", "b"], [1.0, 1.0], [True, False]) == 0.5
    assert weighted_majority_correct([None, None], [1.0, 1.0], [False, False]) == 0.0


def _brute(fn, n: int, k: int) -> float:
    subsets = list(itertools.combinations(range(n), k))
    return sum(fn(list(s)) for s in subsets) / len(subsets)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_best_of_n_at_k_closed_form_equals_enumeration(k):
    scores = [0.5, 2.0, 2.0, -1.0, 0.5, 3.0]  # two ties
    correct = [True, False, True, True, False, False]
    want = _brute(lambda s: best_of_n_correct([scores[i] for i in s], [correct[i] for i in s]), 6, k)
    assert best_of_n_at_k(scores, correct, k) == pytest.approx(want, abs=1e-12)


def test_best_of_n_at_k_hand_values():
    # scores 3 > 2 > 1, right = [no, yes, yes]: k=1 -> 2/3; k=2: best is 3 (wrong) in 2 of 3 pairs -> 1/3
    assert best_of_n_at_k([3.0, 2.0, 1.0], [False, True, True], 1) == pytest.approx(2 / 3)
    assert best_of_n_at_k([3.0, 2.0, 1.0], [False, True, True], 2) == pytest.approx(1 / 3)
    assert best_of_n_at_k([3.0, 2.0, 1.0], [False, True, True], 3) == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_weighted_majority_at_k_equals_enumeration(k):
    answers = ["1", "2", "1", None, "3"]
    scores = [0.2, 1.5, -0.4, 4.0, 0.0]
    correct = [True, False, True, False, False]
    want = _brute(
        lambda s: weighted_majority_correct(
            [answers[i] for i in s], [scores[i] for i in s], [correct[i] for i in s]
        ),
        5,
        k,
    )
    assert weighted_majority_at_k(answers, scores, correct, k) == pytest.approx(want, abs=1e-12)


def test_subset_estimator_is_unbiased_over_draws():
    """Averaging the estimator over every n-sample draw from a pool equals the accuracy with k fresh samples."""
    pool_a, pool_s, pool_c = ["1", "2", "1", "3"], [1.0, 2.0, -1.0, 0.0], [True, False, True, False]
    k, n = 2, 3
    draws = list(itertools.combinations(range(4), n))
    mean_of_estimates = sum(
        weighted_majority_at_k([pool_a[i] for i in d], [pool_s[i] for i in d], [pool_c[i] for i in d], k)
        for d in draws
    ) / len(draws)
    direct = _brute(
        lambda s: weighted_majority_correct(
            [pool_a[i] for i in s], [pool_s[i] for i in s], [pool_c[i] for i in s]
        ),
        4,
        k,
    )
    assert mean_of_estimates == pytest.approx(direct, abs=1e-12)


def _rows(problems: list[list[tuple[str | None, bool, int]]]) -> list[dict]:
    return [
        {"problem": p, "answer": a, "correct": c, "length": length}
        for p, samples in enumerate(problems)
        for a, c, length in samples
    ]


def test_scaling_curves_points_tokens_and_intervals():
    # problem 0: answers 5, 5, 6 (5 right); problem 1: 1, 2, 2 (1 right); ORM favours the right ones
    sampled = _rows(
        [
            [("5", True, 4), ("5", True, 6), ("6", False, 2)],
            [("1", True, 3), ("2", False, 3), ("2", False, 3)],
        ]
    )
    scores = {"orm": [1.0, 1.0, -1.0, 5.0, -2.0, -2.0]}
    tokens = {"orm": [10, 10, 10, 20, 20, 20]}
    out = scaling_curves(sampled, [("majority", None), ("best_of_n", "orm")], [1, 3], scores, tokens)
    maj, bon = out["curves"]
    # majority at n=3: problem 0 right, problem 1 wrong -> 0.5; at n=1: (2/3 + 1/3) / 2 = 0.5
    assert [p["accuracy"] for p in maj["points"]] == pytest.approx([0.5, 0.5])
    # best-of-3 picks score 1.0 (tie of two right) and 5.0 (right) -> 1.0; best-of-1 = mean correctness = 0.5
    assert [p["accuracy"] for p in bon["points"]] == pytest.approx([0.5, 1.0])
    # tokens: n x mean length per problem, summed: n=1 -> 4 + 3 = 7, n=3 -> 12 + 9 = 21; scored 10+20 / 30+60
    assert [p["tokens_generated"] for p in bon["points"]] == [7, 21]
    assert [p["tokens_scored"] for p in bon["points"]] == [30, 90] and maj["points"][0]["tokens_scored"] == 0
    assert out["tokens_generated"] == 21 and out["tokens_scored"] == {"orm": 90}
    lo, hi = bon["points"][0]["accuracy_ci95"]
    assert lo < 0.5 < hi
    table = scaling_markdown(out)
    assert "| best_of_n:orm | 3 | 1.000 [" in table and "| majority | 1 | 0.500 [" in table


def test_scaling_curves_refuse_fewer_samples_than_n():
    sampled = _rows([[("5", True, 4), ("5", True, 6)]])
    with pytest.raises(UserError, match="fewer than n = 3"):
        scaling_curves(sampled, [("majority", None)], [3], {}, {})


def test_parse_selects_and_n_curve():
    assert parse_selects(["majority", "best_of_n:/m", "weighted_majority:/m", "majority", "prm_min:/p"]) == [
        ("majority", None),
        ("best_of_n", "/m"),
        ("weighted_majority", "/m"),
        ("prm_min", "/p"),
    ]
    for bad, message in [
        (["prm_mean:/p"], "unknown selection 'prm_mean'"),
        (["prm_min"], "needs a process reward model"),
        (["prm_last:"], "needs a process reward model"),
        (["best_of_n"], "needs a reward model"),
        (["weighted_majority:"], "needs a reward model"),
        (["majority:/m"], "takes no reward model"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_selects(bad)
    assert parse_n_curve("16, 1,4", 16) == [1, 4, 16]
    assert parse_n_curve(None, 12) == [1, 2, 4, 8, 12]
    with pytest.raises(UserError, match=r"\[64\] outside 1..16") as e:
        parse_n_curve("1,64", 16)
    assert "--n 64" in (e.value.fix or "")
    with pytest.raises(UserError, match="several samples"):
        parse_n_curve("1", 1)
    with pytest.raises(UserError, match="not a list of integers"):
        parse_n_curve("1,four", 8)


# step scores of four completions (c2 has no separator: one step), and which are right
STEPS = [[2.0, -1.0, 0.5], [0.2, 0.3], [0.4], [3.0, 0.1]]
RIGHT = [True, False, False, True]


def test_prm_aggregate_min_and_last():
    assert [prm_aggregate(s, "prm_min") for s in STEPS] == [-1.0, 0.2, 0.4, 0.1]
    assert [prm_aggregate(s, "prm_last") for s in STEPS] == [0.5, 0.3, 0.4, 0.1]
    assert prm_aggregate([], "prm_min") == -math.inf  # nothing scored: never picked over a scored one
    with pytest.raises(ValueError, match="unknown PRM aggregation"):
        prm_aggregate([1.0], "prm_mean")


def test_prm_selection_at_k_by_hand():
    mins = [prm_aggregate(s, "prm_min") for s in STEPS]
    lasts = [prm_aggregate(s, "prm_last") for s in STEPS]
    # prm_min ranks c2 (wrong) > c1 (wrong) > c3 (right) > c0 (right): all 4 -> c2 -> 0; pairs: only {c3, c0}
    # has no wrong one on top -> 1/6; triples: the one without c2 has c1 on top -> 0; k=1: mean correctness
    at = [AT_K["prm_min"]([None] * 4, mins, RIGHT, k) for k in (1, 2, 3, 4)]
    assert at == pytest.approx([0.5, 1 / 6, 0.0, 0.0])
    # prm_last ranks c0 (right) > c2 > c1 (wrong) > c3 (right): pairs with c0 (3 of 6) right; triples 3 of 4
    at = [AT_K["prm_last"]([None] * 4, lasts, RIGHT, k) for k in (1, 2, 3, 4)]
    assert at == pytest.approx([0.5, 0.5, 0.75, 1.0])
    for method, values in (("prm_min", mins), ("prm_last", lasts)):  # the one closed form, by enumeration
        for k in (1, 2, 3):
            want = _brute(
                lambda s, v=values: best_of_n_correct([v[i] for i in s], [RIGHT[i] for i in s]), 4, k
            )
            assert AT_K[method]([None] * 4, values, RIGHT, k) == pytest.approx(want, abs=1e-12)


def test_scaling_curves_aggregate_prm_step_scores():
    sampled = _rows([[("1", ok, 5) for ok in RIGHT]])
    scores, tokens = {"prm": STEPS}, {"prm": [9, 7, 6, 8]}
    out = scaling_curves(sampled, [("prm_min", "prm"), ("prm_last", "prm")], [2, 4], scores, tokens)
    by = {c["label"]: [p["accuracy"] for p in c["points"]] for c in out["curves"]}
    assert by == {"prm_min:prm": pytest.approx([1 / 6, 0.0]), "prm_last:prm": pytest.approx([0.5, 1.0])}
    assert [p["tokens_scored"] for p in out["curves"][0]["points"]] == [15, 30]  # n x mean(9, 7, 6, 8)
    assert [p["tokens_generated"] for p in out["curves"][1]["points"]] == [10, 20]


def test_reward_model_kinds_are_checked_by_name(tmp_path):
    from r1lab.eval.scaling import check_kind, load_scorers

    orm, prm, foreign, causal = (tmp_path / name for name in ("orm", "prm", "foreign", "causal"))
    for folder in (orm, prm, foreign, causal):
        folder.mkdir()
    (orm / "reward_model.json").write_text(json.dumps({"kind": "orm"}))
    (prm / "reward_model.json").write_text(json.dumps({"kind": "prm", "step_sep": "\n"}))
    (foreign / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    (causal / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert check_kind("prm_min", str(prm)) == "prm" and check_kind("best_of_n", str(orm)) == "orm"
    assert check_kind("best_of_n", str(foreign)) == "orm" and check_kind("prm_last", str(causal)) == "prm"
    for folder in (orm, foreign):  # an ORM where a PRM is needed
        with pytest.raises(UserError, match="is an outcome reward model") as e:
            load_scorers([("majority", None), ("prm_min", str(folder))])
        assert f"--select prm_min:{folder}" in str(e.value) and "prm_bce" in e.value.fix
    with pytest.raises(UserError, match=r"^--prm X: .* is an outcome reward model"):
        check_kind("prm_last", str(orm), flag="--prm X")
    with pytest.raises(UserError, match="is a process reward model") as e:  # a PRM where an ORM is needed
        load_scorers([("weighted_majority", str(prm))])
    assert f"--select prm_min:{prm}" in e.value.fix
