"""`uds:` of the SFT stage (UDS online batch selection): the score by hand, the rows the loop back-propagates, the
queue carried through resume, and the configs refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from rl_testkit import single_thread
from safetensors.torch import load_file
from test_sft import assert_same, make_cfg, weights
from test_sft_methods import cut_after_step_2, record_forwards, resume

from r1lab.algorithms.uds import count_sketch, uds_scores
from r1lab.errors import UserError
from r1lab.stages import sft as sft_stage
from r1lab.stages.sft import run_sft
from r1lab.stages.sft_uds import UDSSelector


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_uds_score_is_the_nuclear_norm_plus_alpha_times_the_mean_queue_distance() -> None:
    z1 = torch.tensor([[3.0, 0, 0, 0], [0, 1.0, 0, 0]])  # singular values 3, 1
    z2 = torch.tensor([[1.0, 1, 1, 1]])  # one singular value, 2
    sketches = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    empty = torch.zeros(0, 2)
    assert uds_scores([z1, z2], sketches, empty, alpha=0.1).tolist() == pytest.approx([4.0, 2.0])
    queue = torch.tensor([[0.0, 0.0], [6.0, 8.0]])  # distances: row 0 -> 0 and 10; row 1 -> 5 and 5
    assert uds_scores([z1, z2], sketches, queue, alpha=0.1).tolist() == pytest.approx([4.5, 2.5])
    assert uds_scores([z1, torch.zeros(0, 4)], sketches, empty, 0.1)[1] == float("-inf")  # no targets


def test_count_sketch_sums_signed_entries_per_bucket() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = count_sketch(x, torch.tensor([0, 1, 0, 1]), torch.tensor([1.0, -1.0, 1.0, 1.0]), dim=2)
    assert out.tolist() == [[4.0, 2.0]]


def test_sft_back_propagates_the_top_rows_of_each_micro_batch(tmp_path, tiny_model_dir, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    offered: list[tuple[dict, torch.Tensor]] = []
    real_select = UDSSelector.select

    def spy_select(self, model, batches, targets, device):
        offered.append(({k: v.clone() for k, v in batches[0].items()}, targets[0].clone()))
        return real_select(self, model, batches, targets, device)

    monkeypatch.setattr(UDSSelector, "select", spy_select)
    trained = record_forwards(monkeypatch)
    cfg = make_cfg(tmp_path, tiny_model_dir, "uds", "train.max_steps=2", "uds.keep=2")
    run_sft(cfg)
    assert len(offered) == len(trained) == 2
    batch, targets = offered[0]  # step 1: the model is still the initial one, the queue empty: utility only
    peer = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        logits = peer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    norms = [torch.linalg.matrix_norm(logits[b, :-1][targets[b] != -100], ord="nuc").item() for b in range(4)]
    top = sorted(sorted(range(4), key=lambda b: -norms[b])[:2])
    ids, _, kept_targets = trained[0]
    assert torch.equal(ids, batch["input_ids"][top]) and torch.equal(kept_targets, targets[top])
    rows = [
        json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["uds_kept"] for r in rows] == [0.5, 0.5]
    assert rows[0]["target_tokens"] == int(
        (targets[top] != -100).sum()
    )  # the loss normaliser: kept rows only


def test_uds_queue_is_saved_with_checkpoints_and_resume_is_bit_exact(
    tmp_path, tiny_model_dir, monkeypatch
) -> None:
    # alpha large enough that the diversity term, hence the queue, decides which rows are kept
    extra = ["train.max_steps=4", "uds.keep=2", "uds.alpha=1e4", "uds.sketch_dim=16"]
    straight = run_sft(make_cfg(tmp_path, tiny_model_dir, "straight", *extra))
    cfg = make_cfg(tmp_path, tiny_model_dir, "resumed", *extra, "train.save_every=2")
    run_sft(cfg)
    queue = load_file(str(Path(cfg.train.output_dir) / "checkpoints" / "step-2" / "uds-rank0.queue"))
    assert queue["queue"].shape == (4, 16)  # 2 steps x 2 rows kept, 16 coordinates
    cut_after_step_2(cfg)
    lost = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"output_dir": str(tmp_path / "lost")})}
    )
    shutil.copytree(cfg.train.output_dir, lost.train.output_dir)
    assert_same(weights(straight), weights(resume(cfg)), atol=0.0)
    monkeypatch.setattr(
        UDSSelector, "load", lambda self, checkpoint, rank: False
    )  # as if the queue were lost
    with pytest.raises(AssertionError, match="max parameter difference"):
        assert_same(weights(straight), weights(resume(lost)), atol=0.0)


def test_uds_configs_that_cannot_select_are_refused(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(UserError, match="packing puts several examples in a row"):
        make_cfg(tmp_path, tiny_model_dir, "x", "uds.keep=2", "packing=true")
    with pytest.raises(UserError, match=r"uds\.keep 4 keeps every row"):
        make_cfg(tmp_path, tiny_model_dir, "x", "uds.keep=4")
    with pytest.raises(UserError, match="top_k"):
        make_cfg(tmp_path, tiny_model_dir, "x", "uds.top_k=2")
    assert sft_stage.UDSSelector is UDSSelector
