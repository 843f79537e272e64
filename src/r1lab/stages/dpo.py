"""Preference optimisation (DPO family): one linear loop on the SFT loop's building blocks.

Loss of an optimizer step = (sum of per-pair losses over every micro-batch on every rank) / (pairs in that
whole accumulated batch), so gradient accumulation and extra processes give the large-batch update. The
reference log-probs are computed once before training (or, with LoRA and `reference: adapter_disabled`, on
line from the base with the adapter off); the reference-free losses (simpo, orpo) use none.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from r1lab.algorithms.preference_losses import (
    PREFERENCE_LOSSES,
    READS,
    REFERENCE_FREE,
    PreferenceParams,
    preference_loss,
)
from r1lab.config import DPOConfig, dump_config
from r1lab.data.preference import build_preference_dataset, pair_length, read_preference_data
from r1lab.errors import UserError
from r1lab.models import load_model
from r1lab.stages.dpo_eval import SUMMED, batch_logps, evaluate_pairs, pair_sums
from r1lab.stages.dpo_forward import (
    dataset_fingerprint,
    load_cached_reference,
    reference_logps,
    save_reference,
)
from r1lab.stages.dpo_onpolicy import onpolicy_data
from r1lab.stages.sft import _clip
from r1lab.training.accel import build_accelerator, prepare_model, seed_everything
from r1lab.training.backends import require_backends
from r1lab.training.checkpoint import save_checkpoint, save_final
from r1lab.training.data_order import EpochOrder, shard
from r1lab.training.distributed import reduce_sum
from r1lab.training.fsdp import full_weights
from r1lab.training.interrupt import StopFlag, record_stop
from r1lab.training.optim import build_optimizer, build_scheduler
from r1lab.training.resume import restore, resume_point
from r1lab.training.rundir import ensure_writable, write_state
from r1lab.training.tracking import Tracker, console


def run_dpo(cfg: DPOConfig) -> Path:
    """Train on preference pairs; write `final/` (and checkpoints, metrics.jsonl, config.yaml, state.json,
    reference_logps.safetensors) in cfg.train.output_dir. Returns the folder a next stage should load."""
    train = cfg.train
    params = check_loss(cfg)
    use_reference = cfg.loss not in REFERENCE_FREE
    require_backends(train.report_to)
    out = ensure_writable(train.output_dir)
    accelerator, precision = build_accelerator(train, cfg.model)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    seed_everything(train.seed)

    resume_from = resume_point(train, out)
    data = cfg.data if cfg.pairs is None else onpolicy_data(cfg, out, accelerator)  # sampled from cfg.model
    read = read_preference_data(data, seed=train.seed)  # a data mistake shows before any model loads
    model, tokenizer = load_model(cfg.model, trainable=True)
    dataset = build_preference_dataset(data, tokenizer, read)
    lengths = [pair_length(ex) for ex in dataset]
    global_batch = train.batch_size * train.grad_accum * world
    order = EpochOrder(len(dataset), global_batch, train.seed, shuffle=cfg.data.shuffle)
    total = train.max_steps or max(1, math.ceil(train.epochs * order.steps_per_epoch))

    model = prepare_model(accelerator, model, train)  # DDP, or sharded by FSDP2 (train.distributed)
    optimizer = accelerator.prepare(build_optimizer(model, cfg.optim))
    scheduler = build_scheduler(optimizer, cfg.optim, total)
    inner = accelerator.unwrap_model(model)  # runs the shared prompts (DDP: one wrapped forward per backward)
    pad_id = tokenizer.pad_token_id

    held = dataset.eval or []  # held-out pairs: their reference rows follow the training pairs' in one table
    reference = None
    if use_reference and cfg.reference == "precompute":  # before any update: the initial policy
        fingerprint = dataset_fingerprint(dataset + held, cfg.model.path)
        reference = load_cached_reference(out, fingerprint)
        if reference is None:
            if resume_from is not None:
                raise UserError(
                    f"{out} has checkpoints but no reference log-probs for this model and data",
                    where="train.output_dir",
                    fix="resume with the model and data that wrote it, or start a new output_dir",
                )
            with full_weights(inner):  # FSDP2: ranks score different numbers of pairs
                reference = reference_logps(inner, dataset + held, pad_id, accelerator, train.batch_size)

    start = 0
    if resume_from is not None:
        must_match = {"global_batch": (global_batch, "train.batch_size x train.grad_accum x processes")}
        start = int(restore(resume_from, accelerator, model, optimizer, scheduler, must_match)["step"])
    if main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
        if reference is not None and not (out / "reference_logps.safetensors").is_file():
            save_reference(out, reference, fingerprint)
        write_state(out, "running", step=start, total_steps=total)
        console.print(
            f"dpo ({cfg.loss}): {len(dataset)} pairs ({dataset.stats}), {total} steps of {global_batch} pairs, "
            f"{world} process(es), precision {precision}, reference: "
            + (cfg.reference if use_reference else "none")
        )
    tracker = Tracker(
        out, enabled=main, total_steps=total, start_step=start, report_to=train.report_to,
        config=cfg.model_dump(mode="json"),
    )  # fmt: skip

    saved = [start]

    def save(step: int) -> None:
        saved.append(step)
        epoch, position = order.position(step)
        meta = {"epoch": epoch, "position": position, "global_batch": global_batch, "seed": train.seed}
        save_checkpoint(
            accelerator, model, tokenizer, optimizer, scheduler, out, step, meta, train.save_total_limit
        )

    online = use_reference and reference is None  # LoRA: reference: adapter_disabled

    def micro_loss(ids: list[int], last: bool) -> torch.Tensor:
        """Backward of one micro-batch's share of the step loss; returns its summed metrics [len(SUMMED)]."""
        examples = [dataset[i] for i in ids]
        rows = None if reference is None else reference[torch.tensor(ids)]
        with nullcontext() if last else accelerator.no_sync(model):
            logps = batch_logps(model, inner, examples, pad_id, accelerator, rows, online)
            losses = preference_loss(cfg.loss, logps, params)
            # DDP averages gradients over ranks, so multiply by `world` to get a plain global sum.
            accelerator.backward(losses.sum() * world / global_batch)
        return pair_sums(cfg.loss, logps, losses, cfg.beta)

    def evaluate() -> dict[str, float]:
        rows = None if reference is None else reference[len(dataset) :]
        with full_weights(inner):  # FSDP2: ranks score different numbers of held-out pairs
            return evaluate_pairs(
                model, held, rows, online, cfg.loss, params, accelerator, pad_id, train.batch_size
            )

    step, began, window_pairs, window_time = start, time.perf_counter(), 0, 0.0
    model.train()
    try:
        with StopFlag() as stop:
            while step < total:
                step_began = time.perf_counter()
                indices = order.batch(step)
                micro = shard(indices, lengths, rank=rank, world=world, micro_batch=train.batch_size)
                sums = sum(micro_loss(ids, i == len(micro) - 1) for i, ids in enumerate(micro))
                grad_norm = _clip(accelerator, model, cfg.optim.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1

                window_pairs += global_batch
                window_time += time.perf_counter() - step_began
                if step % train.log_every == 0 or step == total:
                    values = (reduce_sum(sums) / global_batch).tolist()
                    metrics = {**dict(zip(SUMMED, values, strict=True)), "lr": lr, "grad_norm": grad_norm}
                    metrics["pairs_per_s"] = window_pairs / max(window_time, 1e-9)
                    metrics["epoch"] = step / order.steps_per_epoch
                    metrics["elapsed"] = time.perf_counter() - began
                    tracker.log(step, metrics)
                    window_pairs, window_time = 0, 0.0
                tracker.advance(step)
                if held and train.eval_every and step % train.eval_every == 0 and step < total:
                    tracker.log(step, evaluate())
                if train.save_every and step % train.save_every == 0 and step < total:
                    save(step)
                stop.check(accelerator)
    except KeyboardInterrupt as stopped:
        record_stop(stopped, step, total, out, main, tracker, save)
        raise

    if held:  # and always after the last step
        tracker.log(step, evaluate())
    tracker.close()
    if saved[-1] != step:
        save(step)
    merge = cfg.model.lora is not None and cfg.model.lora.merge_on_save
    final = save_final(accelerator, model, tokenizer, out, merge_lora=merge)
    if main:
        write_state(out, "complete", step=step, total_steps=total, final=str(final))
    return final


def check_loss(cfg: DPOConfig) -> PreferenceParams:
    """The loss's parameters; a loss name that is unknown, or a parameter the loss would ignore, is refused.
    A parameter at its default counts as not set, so the resolved config.yaml a run writes loads again."""
    PREFERENCE_LOSSES.get(cfg.loss)
    for key in ("label_smoothing", "simpo_gamma"):
        unread = key not in READS.get(cfg.loss, set())
        if unread and getattr(cfg, key) != DPOConfig.model_fields[key].default:
            users = sorted(name for name, keys in READS.items() if key in keys)
            raise UserError(
                f"{key} is set, but loss {cfg.loss!r} does not use it (only {' and '.join(users)})",
                where=key,
                fix=f"remove {key}, or choose loss: {' or '.join(users)}",
            )
    if cfg.loss in REFERENCE_FREE and cfg.reference != DPOConfig.model_fields["reference"].default:
        raise UserError(
            f"loss {cfg.loss!r} is reference-free, so `reference: {cfg.reference}` is not used",
            where="reference",
            fix="remove `reference`",
        )
    return PreferenceParams(
        beta=cfg.beta,
        label_smoothing=cfg.label_smoothing,
        simpo_gamma=cfg.simpo_gamma,
        rpo_alpha=cfg.rpo_alpha,
    )
