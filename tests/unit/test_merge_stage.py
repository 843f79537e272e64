"""The merge stage on tiny models saved to disk: the output loads with from_pretrained and holds the expected
weights; LoRA inputs, sharded inputs and outputs, the peak memory of a streaming merge, and each bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import MergeConfig, validate
from r1lab.errors import UserError
from r1lab.models.merge_io import INDEX, SafetensorsModel, StreamingWriter
from r1lab.stages.merge import run_merge
from tiny import build_model


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge-inputs")
    out = {}
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        build_model(root / name, tiny_tokenizer, seed=seed)
        out[name] = root / name
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / INDEX
    files = (
        set(json.loads(index.read_text())["weight_map"].values())
        if index.is_file()
        else {"model.safetensors"}
    )
    return {k: v for f in sorted(files) for k, v in load_file(folder / f).items()}


def config(**kw) -> MergeConfig:
    return validate(MergeConfig, kw, "test")


def loaded_state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_linear_soup_loads_with_from_pretrained_and_holds_the_weighted_mean(models, tmp_path):
    out = run_merge(
        config(
            merge_method="linear",
            models=[
                {"model": str(models["a"]), "parameters": {"weight": 1.0}},
                {"model": str(models["b"]), "parameters": {"weight": 3.0}},
            ],
            output=str(tmp_path / "soup"),
        )
    )
    a, b = weights(models["a"]), weights(models["b"])
    state = loaded_state(out)
    assert set(a) <= set(state)
    for name in a:
        torch.testing.assert_close(state[name], (a[name] + 3 * b[name]) / 4, rtol=0, atol=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert (out / "r1lab_merge.yaml").is_file()


def test_task_arithmetic_from_a_sharded_input_equals_the_formula(models, tmp_path):
    sharded = tmp_path / "a-sharded"
    AutoModelForCausalLM.from_pretrained(models["a"]).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / INDEX).is_file()
    out = run_merge(
        config(
            merge_method="task_arithmetic",
            base_model=str(models["base"]),
            models=[
                {"model": str(sharded), "parameters": {"weight": 0.5}},
                {"model": str(models["b"]), "parameters": {"weight": -0.25}},
            ],
            output=str(tmp_path / "ta"),
        )
    )
    base, a, b = weights(models["base"]), weights(models["a"]), weights(models["b"])
    state = loaded_state(out)
    for name in base:
        expected = base[name] + 0.5 * (a[name] - base[name]) - 0.25 * (b[name] - base[name])
        torch.testing.assert_close(state[name], expected, rtol=0, atol=1e-6)


def test_lines_scales_each_block_and_transfer_moves_the_delta(models, tmp_path):
    out = run_merge(
        config(
            merge_method="lines",
            base_model=str(models["base"]),
            models=[{"model": str(models["a"])}],
            parameters={"alpha": 0.25},
            output=str(tmp_path / "lines"),
        )
    )
    base, a, merged = weights(models["base"]), weights(models["a"]), weights(out)
    # 2 blocks: λ(0) = 0.25, λ(1) = 0.25 + 0.75 = 1; embeddings and final norm get alpha
    for name, scale in (
        ("model.layers.0.mlp.up_proj.weight", 0.25),
        ("model.layers.1.mlp.up_proj.weight", 1.0),
        ("model.embed_tokens.weight", 0.25),
    ):
        torch.testing.assert_close(
            merged[name], base[name] + scale * (a[name] - base[name]), rtol=0, atol=1e-6
        )
    moved = run_merge(
        config(
            merge_method="transfer",
            base_model=str(models["base"]),
            target_model=str(models["b"]),
            models=[{"model": str(models["a"])}],
            output=str(tmp_path / "transfer"),
        )
    )
    b, merged = weights(models["b"]), weights(moved)
    for name in base:
        torch.testing.assert_close(merged[name], b[name] + a[name] - base[name], rtol=0, atol=1e-6)


def test_a_lora_adapter_input_is_merged_into_its_base_first(models, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_model = AutoModelForCausalLM.from_pretrained(models["base"])
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base_model, lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(models["base"]).save_pretrained(tmp_path / "adapter")
    expected = peft_model.merge_and_unload().state_dict()
    out = run_merge(
        config(
            merge_method="wise_ft",
            base_model=str(models["base"]),
            models=[{"model": str(tmp_path / "adapter")}],
            parameters={"alpha": 1.0},
            output=str(tmp_path / "merged"),
        )
    )
    merged = weights(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[name], weights(models["base"])[name])  # the adapter changed q_proj
    for name, value in merged.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6)


def test_streaming_writer_shards_and_reader_reads_them_back(tmp_path):
    tensors = {f"t{i}": torch.randn(64, 16) for i in range(5)} | {"ids": torch.arange(7)}
    plan = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    writer = StreamingWriter(tmp_path, plan, max_shard_bytes=64 * 16 * 4 * 2)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    writer.finish()
    index = json.loads((tmp_path / INDEX).read_text())
    assert len(set(index["weight_map"].values())) == 3
    reader = SafetensorsModel(tmp_path)
    for name, tensor in tensors.items():
        assert torch.equal(reader.read(name), tensor)
    reader.close()
    assert weights(tmp_path).keys() == tensors.keys()  # safetensors' own loader reads the files


MEMORY_SCRIPT = """
import re, sys
from r1lab.config import MergeConfig
from r1lab.stages.merge import run_merge

def kib(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

cfg = MergeConfig(merge_method="task_arithmetic", base_model=sys.argv[1],
                  models=[{"model": sys.argv[2]}, {"model": sys.argv[3]}], output=sys.argv[4])
run_merge(cfg.model_copy(update={"output": sys.argv[4] + "-warm-up"}))  # imports, allocator pools
before = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
run_merge(cfg)
print((kib("VmHWM") - before) * 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_peak_memory_is_about_one_tensor_per_input_not_whole_models(tmp_path):
    # 3 inputs of 48 tensors x 1 MiB: whole copies would be 144 MiB, one model 48 MiB
    tensor_bytes, count = 1 << 20, 48
    for i, name in enumerate(("base", "a", "b")):
        (tmp_path / name).mkdir()
        g = torch.Generator().manual_seed(i)
        state = {f"model.layers.{j}.w": torch.randn(256, 1024, generator=g) for j in range(count)}
        save_file(state, tmp_path / name / "model.safetensors")
        (tmp_path / name / "config.json").write_text("{}")  # a folder of weights; the merge reads only them
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / n) for n in ("base", "a", "b", "out")]
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT), *args], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    peak = int(run.stdout.strip().splitlines()[-1])
    one_model = tensor_bytes * count
    print(f"peak RSS increase {peak / 2**20:.1f} MiB; one input model {one_model / 2**20:.0f} MiB")
    assert peak < one_model / 3  # 16 MiB: a few tensors, far from one whole model (48) or all three (144)
    out = weights(tmp_path / "out")
    base, a = (
        load_file(tmp_path / "base" / "model.safetensors"),
        load_file(tmp_path / "a" / "model.safetensors"),
    )
    b = load_file(tmp_path / "b" / "model.safetensors")
    name = "model.layers.7.w"
    torch.testing.assert_close(out[name], a[name] + b[name] - base[name], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input


def test_models_whose_tensor_names_differ_are_refused_naming_the_tensor(models, tiny_qwen_dir, tmp_path):
    cfg = config(
        merge_method="linear",
        models=[{"model": str(models["a"])}, {"model": str(tiny_qwen_dir)}],
        output=str(tmp_path / "out"),
    )
    with pytest.raises(UserError, match=r"tensor 'model\.layers\.0\.self_attn\.k_proj\.bias' is in"):
        run_merge(cfg)
    assert not (tmp_path / "out").exists()


def test_models_whose_shapes_differ_are_refused_naming_the_tensor(models, tiny_tokenizer, tmp_path):
    from tiny import tiny_config

    wide = tiny_config(tiny_tokenizer)
    wide.intermediate_size = 48
    AutoModelForCausalLM.from_config(wide).save_pretrained(tmp_path / "wide")
    cfg = config(
        merge_method="task_arithmetic",
        base_model=str(models["base"]),
        models=[{"model": str(tmp_path / "wide")}],
        output=str(tmp_path / "out"),
    )
    with pytest.raises(UserError, match=r"'model\.layers\.0\.mlp\.down_proj\.weight' has shape \[32, 64\]"):
        run_merge(cfg)
    transfer = config(
        merge_method="transfer",
        base_model=str(models["base"]),
        target_model=str(tmp_path / "wide"),
        models=[{"model": str(models["a"])}],
        output=str(tmp_path / "out"),
    )
    with pytest.raises(UserError, match="transfer: the source and target bases differ in shape"):
        run_merge(transfer)


def test_an_existing_output_is_refused_unless_overwrite(models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    kw = dict(merge_method="linear", models=[{"model": str(models["a"])}], output=str(tmp_path / "out"))
    with pytest.raises(UserError, match="already exists") as err:
        run_merge(config(**kw))
    assert "--overwrite" in str(err.value)
    assert (tmp_path / "out" / "keep.txt").is_file()
    run_merge(config(**kw, overwrite=True))
    assert not (tmp_path / "out" / "keep.txt").exists()
    torch.testing.assert_close(weights(tmp_path / "out"), weights(models["a"]))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"merge_method": "linear", "parameters": {"density": 0.5}}, "has no parameter 'density'"),
        ({"merge_method": "ties", "parameters": {"normalize": 0.5}}, "must be true or false"),
        ({"merge_method": "task_arithmetic"}, "needs base_model"),
        ({"merge_method": "linear", "base_model": "B"}, "does not use base_model"),
        ({"merge_method": "slerp"}, "merges 2 model"),
        ({"merge_method": "linear", "seed": 3}, "seed is not used"),
        ({"merge_method": "task_arithmetic", "base_model": "B", "target_model": "B"}, "transfer only"),
        ({"merge_method": "lienar"}, "did you mean 'linear'"),
        ({"merge_method": "linear", "weights": [1.0, -1.0]}, "the weights sum to 0"),
    ],
)
def test_bad_method_settings_are_refused_before_any_model_is_read(models, tmp_path, kw, message):
    kw = dict(kw)
    listed = kw.pop("weights", [1.0])
    kw["models"] = [{"model": str(models["a"]), "parameters": {"weight": w}} for w in listed]
    if kw.get("base_model") == "B":
        kw["base_model"] = str(models["base"])
    if kw.get("target_model") == "B":
        kw["target_model"] = str(models["b"])
    with pytest.raises(UserError, match=message):
        run_merge(config(**kw, output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_linear_weights_that_do_not_sum_to_one_are_normalised_with_a_warning(models, tmp_path, capsys):
    kw = dict(merge_method="linear", models=[{"model": str(models["a"]), "parameters": {"weight": 2.0}}])
    out = run_merge(config(**kw, output=str(tmp_path / "out")))
    assert "weights sum to 2; normalised to 1" in " ".join(capsys.readouterr().err.split())
    torch.testing.assert_close(weights(out), weights(models["a"]))


def test_a_recipe_merge_stage_takes_base_and_earlier_stages_by_name(models, tmp_path):
    from r1lab.pipeline import run_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""
            name: merges
            output_dir: {tmp_path / "run"}
            model: {{path: {models["base"]}}}
            stages:
              - name: soup
                kind: merge
                merge_method: linear
                models: [{{model: base}}, {{model: {models["a"]}}}]
              - name: wise
                kind: merge
                merge_method: wise_ft
                base_model: base
                models: [{{model: soup}}]
                parameters: {{alpha: 0.5}}
            """
        )
    )
    root = run_recipe(recipe)
    base, a = weights(models["base"]), weights(models["a"])
    wise = weights(root / "wise")
    for name in base:  # soup = (base + a) / 2; wise = (base + soup) / 2 = 0.75 base + 0.25 a
        torch.testing.assert_close(wise[name], 0.75 * base[name] + 0.25 * a[name], rtol=0, atol=1e-6)
    state = json.loads((root / "pipeline.json").read_text())["stages"]
    assert state["wise"]["status"] == "complete"
    AutoModelForCausalLM.from_pretrained(root / "wise")


def test_a_recipe_merge_stage_with_input_is_refused(models, tmp_path):
    from r1lab.pipeline import load_recipe, resolve_stages

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: m\nmodel: {{path: {models['base']}}}\n"
        "stages: [{name: soup, kind: merge, input: base, merge_method: linear, models: [{model: base}]}]\n"
    )
    with pytest.raises(UserError, match="a merge names its inputs itself"):
        resolve_stages(load_recipe(recipe), tmp_path, {}, recipe)


def test_dtype_seed_and_shard_size_change_the_output(models, tmp_path):
    kw = dict(merge_method="linear", models=[{"model": str(models["a"])}, {"model": str(models["b"])}])
    half = weights(run_merge(config(**kw, dtype="bfloat16", output=str(tmp_path / "bf16"))))
    a, b = weights(models["a"]), weights(models["b"])
    name = "model.layers.0.mlp.up_proj.weight"
    assert half[name].dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16
    assert torch.equal(half[name], ((a[name] + b[name]) / 2).to(torch.bfloat16))
    dare = dict(merge_method="dare", base_model=str(models["base"]), models=[{"model": str(models["a"])}])
    one, again, other = (
        weights(run_merge(config(**dare, seed=seed, output=str(tmp_path / f"dare-{i}"))))
        for i, seed in enumerate((1, 1, 2))
    )
    assert torch.equal(one[name], again[name]) and not torch.equal(one[name], other[name])
    # 3 MiB of tensors in shards of at most 1 MiB: an index and 3 shards, read back equal
    (tmp_path / "big").mkdir()
    state = {f"model.layers.{i}.w": torch.randn(512, 512) for i in range(3)}
    save_file(state, tmp_path / "big" / "model.safetensors")
    (tmp_path / "big" / "config.json").write_text("{}")
    out = run_merge(
        config(
            merge_method="linear",
            models=[{"model": str(tmp_path / "big")}],
            max_shard_mb=1,
            output=str(tmp_path / "s"),
        )
    )
    assert len(set(json.loads((out / INDEX).read_text())["weight_map"].values())) == 3
    torch.testing.assert_close(weights(out), state)


def test_element_wise_methods_merge_large_tensors_in_row_blocks(models, tmp_path, monkeypatch):
    import r1lab.stages.merge as stage

    monkeypatch.setattr(stage, "BLOCK_BYTES", 1024)  # 8 rows of a 32-wide tensor per block
    name = "model.embed_tokens.weight"
    assert len(stage.row_blocks(tuple(weights(models["a"])[name].shape))) > 10
    reader = SafetensorsModel(models["a"])
    assert torch.equal(reader.read(name, (3, 11)), weights(models["a"])[name][3:11])
    reader.close()
    out = run_merge(
        config(
            merge_method="lines",
            base_model=str(models["base"]),
            models=[{"model": str(models["a"])}, {"model": str(models["b"]), "parameters": {"weight": 0.5}}],
            parameters={"alpha": 0.5},
            output=str(tmp_path / "blocks"),
        )
    )
    base, a, b, merged = weights(models["base"]), weights(models["a"]), weights(models["b"]), weights(out)
    for key in base:  # 2 blocks: λ = 0.5 for layer 0 and outside, 1 for layer 1
        scale = 1.0 if ".layers.1." in key else 0.5
        expected = base[key] + scale * ((a[key] - base[key]) + 0.5 * (b[key] - base[key]))
        torch.testing.assert_close(merged[key], expected, rtol=0, atol=1e-6)
