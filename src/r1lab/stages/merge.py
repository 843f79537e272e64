"""The merge stage: a weight-space operator (r1lab.algorithms.merge) applied tensor by tensor to saved models.

    run_merge(MergeConfig(merge_method="ties", base_model="base", models=[...], output="runs/m"))

Read top to bottom: check the method's needs and parameters, resolve the inputs (a LoRA adapter is merged
into its base first, with peft, into a scratch folder), check that every input has the same tensor names
and shapes, then for each tensor read it from every input, merge, cast and append it to the output shard.
Element-wise methods do this per row block of a tensor (BLOCK_BYTES), so memory does not grow with the model
or its largest tensor; ties, dare and slerp need whole tensors (per-tensor top-k, masks, norms): one tensor
per input plus float32 temporaries. A LoRA input costs one full load of its base while it is merged in. The output is written beside its final place and renamed into it.

Weights for `linear` with normalize (the default, as mergekit): the soup is Σ w_i θ_i / Σ w_i, and a sum
other than 1 is reported (the normalised weights are printed); a sum ≤ 0 is refused. With normalize: false
the weights are used as given, and a sum other than 1 is reported as a rescaling of the whole model.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import zlib
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track

from r1lab.algorithms.merge import MERGE_METHODS, MergeInputs, MergeMethod, layer_index
from r1lab.config import MergeConfig, ModelConfig, apply_overrides, dump_config, load_yaml, validate
from r1lab.errors import UserError
from r1lab.models.merge_io import (
    SafetensorsModel,
    StreamingWriter,
    copy_model_files,
    prepare_output,
    publish,
    set_config_dtype,
)

console = Console(stderr=True)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# element-wise methods merge a large tensor in row blocks of about this many float32 bytes; the peak is ~20x a
# block (inputs, float32 copies, deltas, sums, allocator slack): measured 22 MiB at 1 MiB, 275 MiB at 16 MiB
BLOCK_BYTES = 1 << 20


def run_merge(cfg: MergeConfig) -> Path:
    if cfg.merge_method == "greedy_soup":  # not a tensor operator: linear soups chosen by validation accuracy
        from r1lab.stages.merge_soup import greedy_soup

        return greedy_soup(cfg, run_merge)
    method = MERGE_METHODS.get(cfg.merge_method)
    params = method_parameters(cfg, method)
    weights = [m.parameters.weight for m in cfg.models]
    check_weights(cfg, method, params, weights)
    out = Path(cfg.output)
    tmp = prepare_output(out, cfg.overwrite, "output")
    try:
        with tempfile.TemporaryDirectory(prefix="r1lab-merge-") as scratch:
            folders = {
                role: resolve_input(spec, Path(scratch) / role, cfg)
                for role, spec in input_specs(cfg).items()
            }
            sources = {role: SafetensorsModel(folder) for role, folder in folders.items()}
            try:
                merge_tensors(cfg, method, params, weights, sources, tmp)
            finally:
                for source in sources.values():
                    source.close()
            # config, tokenizer, chat template: from the target base (transfer), base, else the first model
            order = [r for r in ("target", "base") if r in folders] + [r for r in folders if r[:5] == "model"]
            copy_model_files([folders[r] for r in order], tmp)
        if cfg.dtype:
            set_config_dtype(tmp, cfg.dtype)
        dump_config(cfg, tmp / "r1lab_merge.yaml")
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when published
    console.print(f"merged {len(cfg.models)} model(s) with {cfg.merge_method} into {out}")
    return out


def method_parameters(cfg: MergeConfig, method: MergeMethod) -> dict[str, object]:
    """The operator's keyword arguments from `parameters:`; keys or inputs the method does not use are refused."""
    allowed = method.params
    name = cfg.merge_method
    for key, value in cfg.parameters.items():
        if key not in allowed:
            raise UserError(
                f"merge_method {name!r} has no parameter {key!r}",
                where=f"parameters.{key}",
                fix=f"{name} takes: {', '.join(allowed) or '(no parameters)'}",
            )
        if isinstance(allowed[key], bool) != isinstance(value, bool):
            kind = "true or false" if isinstance(allowed[key], bool) else "a number"
            raise UserError(f"parameters.{key} must be {kind}, got {value!r}", where=f"parameters.{key}")
    count = len(cfg.models)
    if count < method.min_models or (method.max_models is not None and count > method.max_models):
        wanted = (
            method.min_models if method.max_models == method.min_models else f"at least {method.min_models}"
        )
        raise UserError(f"{name} merges {wanted} model(s), got {count}", where="models")
    if method.needs_base and not cfg.base_model:
        raise UserError(f"{name} needs base_model (the task vectors are θ_i − θ_base)", where="base_model")
    if not method.needs_base and cfg.base_model:
        raise UserError(f"{name} does not use base_model", where="base_model", fix="remove base_model")
    if method.needs_target != bool(cfg.target_model):
        fix = "set target_model: the new base" if method.needs_target else "remove target_model"
        raise UserError(
            f"target_model is for transfer only; merge_method is {name!r}", where="target_model", fix=fix
        )
    if not method.uses_weights and any("weight" in m.parameters.model_fields_set for m in cfg.models):
        raise UserError(
            f"{name} takes no per-model weight", where="models[].parameters.weight", fix="remove it"
        )
    if cfg.validation is not None:
        raise UserError(f"{name} does not evaluate: validation is for greedy_soup", where="validation")
    if "seed" in cfg.model_fields_set and not method.seeded:
        raise UserError(f"{name} is deterministic: seed is not used", where="seed", fix="remove seed")
    return {**allowed, **cfg.parameters}


def check_weights(
    cfg: MergeConfig, method: MergeMethod, params: dict[str, object], weights: list[float]
) -> None:
    if cfg.merge_method != "linear":
        return
    total = sum(weights)
    if params["normalize"]:
        if total <= 0:
            raise UserError(
                f"linear: the weights sum to {total:g}; a soup divides by their sum",
                where="models[].parameters.weight",
                fix="give positive weights (they are normalised to sum to 1)",
            )
        if abs(total - 1) > 1e-6:
            shares = ", ".join(f"{w / total:.4g}" for w in weights)
            console.print(f"[yellow]linear: weights sum to {total:g}; normalised to {shares}[/yellow]")
    elif abs(total - 1) > 1e-6:
        console.print(
            f"[yellow]linear: weights sum to {total:g} and normalize is false: every weight of "
            f"the merged model is scaled by about {total:g}[/yellow]"
        )


def input_specs(cfg: MergeConfig) -> dict[str, str]:
    specs = {f"model{i}": m.model for i, m in enumerate(cfg.models)}
    if cfg.base_model:
        specs["base"] = cfg.base_model
    if cfg.target_model:
        specs["target"] = cfg.target_model
    return specs


def resolve_input(spec: str, scratch: Path, cfg: MergeConfig) -> Path:
    """A folder of safetensors weights for `spec`; a LoRA adapter is merged into its base (peft) first."""
    from r1lab.models import load_model, resolve_model_path

    folder = Path(resolve_model_path(spec))
    if (folder / "config.json").is_file() or not (folder / "adapter_config.json").is_file():
        return folder
    model, tokenizer = load_model(
        ModelConfig(path=str(folder), dtype="auto", trust_remote_code=cfg.trust_remote_code), trainable=False
    )
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    del model
    return scratch


def check_same_tensors(reference: SafetensorsModel, other: SafetensorsModel, what: str) -> None:
    """Refuse inputs whose tensor names or shapes differ, naming the first tensor that does."""
    names, theirs = set(reference.tensors), set(other.tensors)
    if names != theirs:
        first = sorted(names ^ theirs)[0]
        has, lacks = (reference, other) if first in names else (other, reference)
        raise UserError(
            f"{what}: tensor {first!r} is in {has.folder} but not in {lacks.folder}",
            fix="merge models of one architecture and size (the same tensor names)",
        )
    for name in sorted(names):
        a, b = reference.tensors[name].shape, other.tensors[name].shape
        if a != b:
            raise UserError(
                f"{what}: tensor {name!r} has shape {list(a)} in {reference.folder} "
                f"but {list(b)} in {other.folder}",
                fix="merge models of one architecture and size (the same tensor shapes)",
            )


def merge_tensors(
    cfg: MergeConfig,
    method: MergeMethod,
    params: dict[str, object],
    weights: list[float],
    sources: dict[str, SafetensorsModel],
    out: Path,
) -> None:
    models = [sources[f"model{i}"] for i in range(len(cfg.models))]
    reference = sources.get("base", models[0])
    specs = input_specs(cfg)
    for role, source in sources.items():
        if role == "target":
            check_same_tensors(reference, source, "transfer: the source and target bases differ in shape")
        elif source is not reference:
            check_same_tensors(reference, source, f"input {specs[role]!r} does not match the others")
    writer_source = sources.get("target", reference)
    plan = [
        (name, DTYPES[cfg.dtype] if cfg.dtype and info.dtype.is_floating_point else info.dtype, info.shape)
        for name, info in writer_source.tensors.items()
    ]
    layers = [i for i in map(layer_index, reference.tensors) if i is not None]
    num_layers = max(layers) + 1 if layers else 1
    writer = StreamingWriter(out, plan, cfg.max_shard_mb * 1024 * 1024)
    for name, dtype, _ in track(plan, description=f"{cfg.merge_method}", console=console):
        if not dtype.is_floating_point:  # integer buffers: kept from the base (or the target base)
            writer.write(name, writer_source.read(name))
            continue
        blocks = row_blocks(reference.tensors[name].shape) if method.elementwise else [None]
        merged = (
            merge_rows(cfg, method, params, weights, sources, name, rows, num_layers) for rows in blocks
        )
        writer.write(name, (part.to(dtype) for part in merged))
    writer.finish()


def row_blocks(shape: tuple[int, ...]) -> list[tuple[int, int] | None]:
    """Row ranges of about BLOCK_BYTES (in float32) each; [None] (the whole tensor) for a 0-d or small one."""
    if not shape or shape[0] <= 1:
        return [None]
    row = 4 * max(1, math.prod(shape[1:]))
    step = max(1, BLOCK_BYTES // row)
    if step >= shape[0]:
        return [None]
    return [(a, min(a + step, shape[0])) for a in range(0, shape[0], step)]


def merge_rows(
    cfg: MergeConfig,
    method: MergeMethod,
    params: dict[str, object],
    weights: list[float],
    sources: dict[str, SafetensorsModel],
    name: str,
    rows: tuple[int, int] | None,
    num_layers: int,
) -> torch.Tensor:
    """One tensor's merge, or the merge of its rows [a, b) for an element-wise method."""
    inputs = MergeInputs(
        models=[sources[f"model{i}"].read(name, rows) for i in range(len(cfg.models))],
        weights=weights,
        base=sources["base"].read(name, rows) if "base" in sources else None,
        target=sources["target"].read(name, rows) if "target" in sources else None,
        layer=layer_index(name),
        num_layers=num_layers,
        generator=tensor_generator(cfg.seed, name) if method.seeded else None,
    )
    return method(inputs, **params)


def tensor_generator(seed: int, name: str) -> torch.Generator:
    """One generator per tensor, from the seed and the tensor's name: masks do not depend on tensor order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def merge_from_file(
    path: Path, output: Path, overrides: list[str] | None = None, overwrite: bool = False
) -> Path:
    """`r1lab merge CONFIG.yaml OUTPUT`: the output folder is the command's, as with mergekit-yaml."""
    data = apply_overrides(load_yaml(path), overrides or [])
    data.setdefault("kind", "merge")
    for key in ("output", "overwrite"):
        if key in data:
            raise UserError(
                f"`{key}` is given on the command line for `r1lab merge`",
                where=f"{path}: {key}",
                fix=f"remove `{key}` from the config (use the OUTPUT argument and --overwrite)",
            )
    return run_merge(validate(MergeConfig, {**data, "output": str(output), "overwrite": overwrite}, path))
