"""Contamination check: normalised exact duplicates and word n-gram containment, on hand-counted cases."""

from __future__ import annotations

import csv
import json

import pytest

from r1lab.data.contamination import check_contamination, compare_texts, normalise_text
from r1lab.errors import UserError


def test_normalisation_folds_case_punctuation_and_space_but_keeps_numbers():
    assert normalise_text("What is 2+3?") == "what is 2 3"
    assert normalise_text("  WHAT   is 2 + 3 !") == "what is 2 3"
    assert normalise_text("What is 2+4?") != normalise_text("What is 2+3?")
    assert normalise_text("ﬁve_Ｘ") == "five x"  # NFKC: the ligature and the full-width letter


def test_exact_near_short_and_clean_prompts_are_counted_apart():
    train = ["x a b c d y", "What is 12 plus 7 and then times 3 please", "Sort: 5, 1, 4"]
    test = [
        "sort 5 1 4!",  # exact after normalisation (record 3 of train)
        "a b c d e",  # trigrams abc, bcd found, cde not: 2/3
        "what is 12 plus 8 and then times 3 please",  # 8 trigrams, the 3 holding "8" are new: 5/8
        "p q",  # under 3 words: exact check only
        "nothing here is like the training data",
    ]
    report = compare_texts(train, test, n=3, threshold=0.6)
    assert [(m.test, m.train, m.score) for m in report.exact] == [(1, 3, 1.0)]
    assert [(m.test, m.train) for m in report.near] == [(2, 1), (3, 2)]
    assert [m.score for m in report.near] == pytest.approx([2 / 3, 5 / 8])
    assert report.unchecked == 1 and report.contaminated == 3 and report.fraction == pytest.approx(3 / 5)
    strict = compare_texts(train, test, n=3, threshold=0.65)  # 5/8 = 0.625 is now below the threshold
    assert [m.test for m in strict.near] == [2]
    clean = compare_texts(train, test[3:], n=3)
    assert clean.contaminated == 0 and clean.fraction == 0.0


def test_files_of_different_formats_compare_their_user_prompts(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "Add 3 and 4."}, {"role": "assistant", "content": "7"}]},
        {
            "messages": [
                {"role": "user", "content": "Count the vowels in banana"},
                {"role": "assistant", "content": "3"},
            ]
        },
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.csv"
    with test.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["prompt", "completion"])
        writer.writeheader()
        writer.writerows(
            [{"prompt": "add 3 and 4", "completion": "7"}, {"prompt": "Add 5 and 4.", "completion": "9"}]
        )
    report = check_contamination(str(train), str(test), n=8)
    assert report.train_count == 2 and report.test_count == 2
    assert [(m.test, m.train, m.train_text) for m in report.exact] == [(1, 1, "Add 3 and 4.")]
    assert report.near == [] and report.unchecked == 1  # "add 5 and 4": 4 words < 8
    d = report.to_dict()
    assert d["contaminated"] == 1 and d["fraction"] == 0.5 and d["exact"][0]["test_text"] == "add 3 and 4"


def test_a_missing_file_or_an_unmapped_column_is_a_user_error(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"question": "q"}) + "\n")
    nope = str(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r"data file not found: .*nope\.jsonl") as e:
        check_contamination(str(train), nope, columns={"prompt": "question"})
    assert e.value.where == f"test data: {nope}"
    with pytest.raises(UserError, match="cannot tell the data format") as e:
        check_contamination(str(train), str(train))
    assert e.value.where == f"train data: {train}" and "columns: {prompt: question" in e.value.fix
    assert check_contamination(str(train), str(train), columns={"prompt": "question"}).contaminated == 1


def test_template_ngrams_shared_by_many_training_prompts_are_ignored():
    """Every prompt ends in the same 8-word instruction: with n=4 its 5 inner 4-grams are in all 4 training
    prompts, so they are template; the 5 4-grams that hold a prompt's own numbers are its content."""
    tail = "show your steps then write the final answer"
    train = [f"what is {a} plus {b} {tail}" for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))]
    fresh = f"what is 9 plus 10 {tail}"  # 5 content 4-grams, none in train; 5 template
    leaked = f"what is 3 plus 4 {tail} now"  # 5 content 4-grams, all in train #2; 5 template; 'the final answer now'
    report = compare_texts(train, [fresh, leaked], n=4, threshold=0.5, max_gram_prompts=3)
    assert report.template_ngrams == 5
    assert [(m.test, m.train) for m in report.near] == [(2, 2)]
    assert report.near[0].score == pytest.approx(5 / 6)
    naive = compare_texts(train, [fresh, leaked], n=4, threshold=0.5, max_gram_prompts=4)
    assert naive.template_ngrams == 0
    assert [(m.test, m.score) for m in naive.near] == [
        (1, 5 / 10),
        (2, 10 / 11),
    ]  # the fresh one looks leaked
