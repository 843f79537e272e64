"""Merge operators on small tensors whose merged values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.merge import MERGE_METHODS, MergeInputs, layer_index, trim_top_k

BASE = torch.tensor([1.0, 1.0, 1.0, 1.0])
A = torch.tensor([2.0, 0.0, 1.5, 1.0])  # Δ_A = [1, -1, 0.5, 0]
B = torch.tensor([0.0, 3.0, 1.0, 1.0])  # Δ_B = [-1, 2, 0, 0]


def merge(name: str, inputs: MergeInputs, **params) -> torch.Tensor:
    return MERGE_METHODS.get(name)(inputs, **params)


def test_linear_normalises_by_the_weight_sum_unless_told_not_to():
    inputs = MergeInputs(models=[A, B], weights=[1.0, 3.0])
    # (1·A + 3·B) / 4 = [0.5, 2.25, 1.125, 1]
    assert torch.allclose(merge("linear", inputs), torch.tensor([0.5, 2.25, 1.125, 1.0]))
    assert torch.allclose(merge("linear", inputs, normalize=False), torch.tensor([2.0, 9.0, 4.5, 4.0]))
    with pytest.raises(ValueError, match="sum to 0"):
        merge("linear", MergeInputs(models=[A, B], weights=[1.0, -1.0]))


def test_task_arithmetic_adds_weighted_task_vectors_to_the_base():
    inputs = MergeInputs(models=[A, B], weights=[1.0, 0.5], base=BASE)
    # 1 + [1, -1, 0.5, 0] + 0.5·[-1, 2, 0, 0] = [1.5, 1, 1.5, 1]
    assert torch.allclose(merge("task_arithmetic", inputs), torch.tensor([1.5, 1.0, 1.5, 1.0]))


def test_transfer_applies_the_old_bases_task_vector_to_the_new_base():
    new_base = torch.tensor([10.0, 20.0, 30.0, 40.0])
    inputs = MergeInputs(models=[A], weights=[1.0], base=BASE, target=new_base)
    assert torch.allclose(merge("transfer", inputs), torch.tensor([11.0, 19.0, 30.5, 40.0]))
    with pytest.raises(ValueError, match="shape"):
        merge("transfer", MergeInputs(models=[A], weights=[1.0], base=BASE, target=torch.zeros(3)))


def test_layer_index_is_parsed_from_the_tensor_name():
    assert layer_index("model.layers.7.self_attn.q_proj.weight") == 7
    assert layer_index("transformer.h.11.mlp.c_fc.weight") == 11
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_index("model.norm.weight") is None
    assert layer_index("lm_head.weight") is None


def test_lines_scales_the_task_vector_linearly_with_depth():
    # L = 3, alpha 0.2, beta 0.6: λ(0) = 0.2, λ(1) = 0.5, λ(2) = 0.8; outside the blocks λ = alpha
    expected = {0: 0.2, 1: 0.5, 2: 0.8, None: 0.2}
    for layer, scale in expected.items():
        inputs = MergeInputs(models=[A], weights=[1.0], base=BASE, layer=layer, num_layers=3)
        out = merge("lines", inputs, alpha=0.2, beta=0.6)
        assert torch.allclose(out, BASE + scale * (A - BASE)), layer
    # beta defaults to 1 - alpha: the last block keeps its whole task vector
    top = MergeInputs(models=[A], weights=[1.0], base=BASE, layer=2, num_layers=3)
    assert torch.allclose(merge("lines", top, alpha=0.3), A)


def test_trim_keeps_the_largest_magnitudes():
    delta = torch.tensor([0.1, -3.0, 2.0, -0.5])
    assert torch.equal(trim_top_k(delta, 0.5), torch.tensor([0.0, -3.0, 2.0, 0.0]))
    assert torch.equal(trim_top_k(delta, 0.1), torch.tensor([0.0, -3.0, 0.0, 0.0]))  # at least one kept
    assert torch.equal(trim_top_k(delta, 1.0), delta)


def test_ties_trims_elects_sign_and_averages_the_agreeing_entries():
    base = torch.zeros(4)
    a = torch.tensor([3.0, -1.0, 0.2, 2.0])
    b = torch.tensor([-1.0, -2.0, 0.1, 4.0])
    c = torch.tensor([-1.5, 5.0, -0.1, 1.0])
    # density 0.5 keeps 2 entries each: a → [3, 0, 0, 2], b → [0, -2, 0, 4], c → [-1.5, 5, 0, 0]
    # elected signs (Σ): [+1.5 → +, +3 → +, 0 → +, +6 → +]
    # entry 0: agreeing a=3 → 3; entry 1: c=5 → 5; entry 2: none agree (all trimmed) → 0; entry 3: (2+4)/2 = 3
    inputs = MergeInputs(models=[a, b, c], weights=[1.0, 1.0, 1.0], base=base)
    assert torch.allclose(merge("ties", inputs, density=0.5), torch.tensor([3.0, 5.0, 0.0, 3.0]))
    # normalize false sums the agreeing entries; lambda scales the merged task vector
    assert torch.allclose(
        merge("ties", inputs, density=0.5, normalize=False, **{"lambda": 2.0}),
        torch.tensor([6.0, 10.0, 0.0, 12.0]),
    )
    # weights enter the election: with c weighted 3, entry 0 is −4.5 + 3 → negative, so c alone is kept
    weighted = MergeInputs(models=[a, b, c], weights=[1.0, 1.0, 3.0], base=base)
    assert torch.allclose(merge("ties", weighted, density=0.5)[0], torch.tensor(-1.5))


def test_ties_zero_sign_sum_counts_positive():
    inputs = MergeInputs(
        models=[torch.tensor([1.0]), torch.tensor([-1.0])], weights=[1.0, 1.0], base=torch.zeros(1)
    )
    assert torch.allclose(merge("ties", inputs), torch.tensor([1.0]))


def test_dare_drops_with_p_rescales_survivors_and_is_seeded():
    base = torch.zeros(10_000)
    ft = torch.full((10_000,), 2.0)
    out = merge(
        "dare",
        MergeInputs(models=[ft], weights=[1.0], base=base, generator=torch.Generator().manual_seed(0)),
        density=0.25,
    )
    kept = out != 0
    assert torch.all(out[kept] == 8.0)  # 2 / 0.25
    assert abs(kept.float().mean().item() - 0.25) < 0.02
    again = merge(
        "dare",
        MergeInputs(models=[ft], weights=[1.0], base=base, generator=torch.Generator().manual_seed(0)),
        density=0.25,
    )
    assert torch.equal(out, again)
    full = merge(
        "dare", MergeInputs(models=[ft], weights=[1.0], base=base, generator=torch.Generator()), density=1.0
    )
    assert torch.equal(full, ft)


def test_slerp_rotates_between_orthogonal_vectors_and_falls_back_to_lerp():
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    out = merge("slerp", MergeInputs(models=[v0, v1], weights=[1.0, 1.0]), t=0.5)
    # θ = π/2: sin(π/4)/sin(π/2) = √½ for each
    half = math.sqrt(0.5)
    assert torch.allclose(out, torch.tensor([half, 2 * half]))
    assert torch.allclose(merge("slerp", MergeInputs(models=[v0, v1], weights=[1.0, 1.0]), t=0.0), v0)
    parallel = merge("slerp", MergeInputs(models=[v0, 3 * v0], weights=[1.0, 1.0]), t=0.25)
    assert torch.allclose(parallel, torch.tensor([1.5, 0.0]))  # lerp: 0.75·1 + 0.25·3


def test_wise_ft_interpolates_base_and_fine_tune():
    out = merge("wise_ft", MergeInputs(models=[A], weights=[1.0], base=BASE), alpha=0.25)
    assert torch.allclose(out, 0.75 * BASE + 0.25 * A)


def test_methods_declare_their_parameters_and_needs():
    assert MERGE_METHODS.get("ties").params == {"density": 1.0, "normalize": True, "lambda": 1.0}
    assert MERGE_METHODS.get("slerp").max_models == 2
    assert MERGE_METHODS.get("dare").seeded
    assert not MERGE_METHODS.get("linear").needs_base
    with pytest.raises(ValueError, match="needs a base"):
        merge("task_arithmetic", MergeInputs(models=[A], weights=[1.0]))
