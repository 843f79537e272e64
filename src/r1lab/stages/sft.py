"""Supervised fine-tuning: one linear loop, the same code for one process and for many (accelerate DDP).

Loss of an optimizer step = (sum of target-token NLL over every micro-batch on every rank) / (number of target
tokens in that whole accumulated batch). The token count is all-reduced before the step's first forward, so
gradient accumulation and extra processes give the same update as one large batch.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from r1lab.algorithms.sft_losses import IGNORE_INDEX, SFT_LOSSES
from r1lab.config import OTRConfig, SFTConfig, dump_config
from r1lab.data import build_sft_dataset, collate, read_sft_data
from r1lab.data.mask_thought import ThoughtMasker
from r1lab.errors import UserError
from r1lab.models import load_model
from r1lab.stages.sft_uds import UDSSelector, target_logits
from r1lab.stages.sft_vlm import vision_sft
from r1lab.training.accel import build_accelerator, prepare_model, seed_everything
from r1lab.training.backends import require_backends
from r1lab.training.checkpoint import save_checkpoint, save_final
from r1lab.training.data_order import EpochOrder, shard
from r1lab.training.distributed import reduce_sum
from r1lab.training.fsdp import full_weights
from r1lab.training.hft import apply_hft, write_hft_record
from r1lab.training.interrupt import StopFlag, record_stop
from r1lab.training.optim import build_optimizer, build_scheduler
from r1lab.training.resume import restore, resume_point
from r1lab.training.rundir import ensure_writable, write_state
from r1lab.training.tracking import Tracker, console


def run_sft(cfg: SFTConfig) -> Path:
    """Train, write `final/` (and checkpoints, metrics.jsonl, config.yaml, state.json) in cfg.train.output_dir.

    Returns the folder a next stage should load: `final/`, or `final/merged` for LoRA with merge_on_save.
    """
    train = cfg.train
    require_backends(train.report_to)
    out = ensure_writable(train.output_dir)
    accelerator, precision = build_accelerator(train, cfg.model)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    seed_everything(train.seed)
    loss_fn = SFT_LOSSES.get(cfg.loss)
    if cfg.loss == "otr":
        o = cfg.otr or OTRConfig()
        knobs = {"k": o.k, "temperature": o.temperature, "negative_reward": o.negative_reward}
        loss_fn = functools.partial(loss_fn, **knobs, nll_weight=o.nll_weight)
    eval_fn = SFT_LOSSES.get("nll") if cfg.loss == "otr" else loss_fn  # eval_loss stays a held-out NLL

    resume_from = resume_point(train, out)  # a folder holding an earlier run is refused before any work
    vision = vision_sft(cfg, seed=train.seed)  # a VLM (stages/sft_vlm.py): its rows read with their images
    if vision and cfg.uds:
        raise UserError(
            "uds selects rows of text micro-batches; image rows are not supported",
            where="uds",
            fix="remove uds for a vision-language model",
        )
    read = None if vision else read_sft_data(cfg.data, seed=train.seed)  # data mistakes show before the model
    if vision:
        model, tokenizer = vision.load()
    else:
        model, tokenizer = load_model(cfg.model, trainable=True, calibrate=_corda_calibration(cfg, read))
    hft = cfg.hft and apply_hft(model, cfg.hft, train.seed, out, resuming=resume_from is not None)
    dataset = vision.dataset() if vision else build_sft_dataset(cfg.data, tokenizer, read=read)
    batch_of = vision.collate if vision else functools.partial(_collate, cfg)
    files = vision.processor if vision else tokenizer  # saved beside the weights: the processor for a VLM
    lengths = [len(ex["input_ids"]) for ex in dataset]
    global_batch = train.batch_size * train.grad_accum * world
    order = EpochOrder(len(dataset), global_batch, train.seed, shuffle=cfg.data.shuffle)
    total = train.max_steps or max(1, math.ceil(train.epochs * order.steps_per_epoch))
    thought = cfg.mask_thought
    masker = thought and ThoughtMasker(thought, tokenizer, seed=train.seed, total_steps=total)
    uds = cfg.uds and UDSSelector(cfg.uds, seed=train.seed)

    model = prepare_model(accelerator, model, train)  # DDP, or sharded by FSDP2 (train.distributed)
    optimizer = accelerator.prepare(build_optimizer(model, cfg.optim))
    scheduler = build_scheduler(optimizer, cfg.optim, total)  # stepped by hand: once per optimizer step

    start = 0
    if resume_from is not None:
        must_match = {"global_batch": (global_batch, "train.batch_size x train.grad_accum x processes")}
        start = int(restore(resume_from, accelerator, model, optimizer, scheduler, must_match)["step"])
        if uds and not uds.load(resume_from, rank):
            console.print(f"uds: {resume_from} holds no selection queue; it starts empty")
    if main:
        out.mkdir(parents=True, exist_ok=True)  # only now: a failed start leaves no empty run folder
        dump_config(cfg, out / "config.yaml")
        write_state(out, "running", step=start, total_steps=total)
        if hft:
            write_hft_record(out, hft)
            frozen = f"{len(hft['frozen'])} tensors frozen ({hft['frozen_fraction']:.1%} of parameters)"
            console.print(f"hft: {frozen}, listed in hft.json")
        if masker:
            console.print(masker.describe())
        console.print(
            f"sft: {len(dataset)} examples ({dataset.stats}), {total} steps of {global_batch} sequences, "
            f"{world} process(es), precision {precision}"
        )
    tracker = Tracker(
        out,
        enabled=main,
        total_steps=total,
        start_step=start,
        report_to=train.report_to,
        config=cfg.model_dump(mode="json"),
    )

    saved = [start]  # steps with a checkpoint on disk (no per-rank file check: ranks must agree without I/O)

    def save(step: int) -> None:
        saved.append(step)
        epoch, position = order.position(step)
        meta = {"epoch": epoch, "position": position, "global_batch": global_batch, "seed": train.seed}
        path = save_checkpoint(
            accelerator, model, files, optimizer, scheduler, out, step, meta, train.save_total_limit
        )
        if uds:
            uds.save(path, rank)

    pad_id = tokenizer.pad_token_id
    # tokens/s counts training compute only (not checkpoint or eval time); elapsed is wall time.
    step, began, window_tokens, window_time = start, time.perf_counter(), 0, 0.0
    model.train()
    try:
        with StopFlag() as stop:
            while step < total:
                step_began = time.perf_counter()
                indices = order.batch(step)
                micro = shard(indices, lengths, rank=rank, world=world, micro_batch=train.batch_size)
                batches = [batch_of([dataset[i] for i in ids], pad_id) for ids in micro]
                targets = [_shifted_targets(b) for b in batches]  # before masking: labels stay the original
                if uds:  # UDS: only the top rows of each micro-batch go on (scored before any masking)
                    batches, targets = uds.select(model, batches, targets, accelerator.device)
                if masker:
                    batches = masker(batches, step, rank)
                local = torch.tensor(float(sum(int((t != IGNORE_INDEX).sum()) for t in targets)))
                n_tokens = reduce_sum(local.to(accelerator.device)).clamp(min=1)

                step_loss = torch.zeros((), device=accelerator.device)
                for i, (batch, target) in enumerate(zip(batches, targets, strict=True)):
                    last = i == len(batches) - 1
                    with nullcontext() if last else accelerator.no_sync(model):
                        summed = _forward_loss(model, batch, target, loss_fn, accelerator.device)
                        # DDP averages gradients over ranks, so multiply by `world` to get a plain global sum.
                        accelerator.backward(summed * world / n_tokens)
                    step_loss += summed.detach()

                grad_norm = _clip(accelerator, model, cfg.optim.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1

                loss = reduce_sum(step_loss) / n_tokens
                window_tokens += sum(lengths[i] for i in indices)
                window_time += time.perf_counter() - step_began
                if step % train.log_every == 0 or step == total:
                    metrics = {
                        "loss": loss.item(),
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens": window_tokens,  # input tokens (no padding) since the last log
                        "tokens_per_s": window_tokens / max(window_time, 1e-9),
                        "target_tokens": int(n_tokens.item()),
                        "epoch": step / order.steps_per_epoch,
                        "elapsed": time.perf_counter() - began,
                    }
                    if masker:
                        metrics["mask_rate"] = masker.rate(step - 1)
                    if uds:
                        metrics["uds_kept"] = uds.take_rate()
                    tracker.log(step, metrics)
                    window_tokens, window_time = 0, 0.0
                tracker.advance(step)
                if dataset.eval and train.eval_every and step % train.eval_every == 0 and step < total:
                    eval_loss = evaluate(model, dataset.eval, cfg, accelerator, eval_fn, pad_id, batch_of)
                    tracker.log(step, {"eval_loss": eval_loss})
                if train.save_every and step % train.save_every == 0 and step < total:
                    save(step)
                stop.check(accelerator)
    except KeyboardInterrupt as stopped:
        record_stop(stopped, step, total, out, main, tracker, save)
        raise

    if dataset.eval:
        eval_loss = evaluate(model, dataset.eval, cfg, accelerator, eval_fn, pad_id, batch_of)
        tracker.log(step, {"eval_loss": eval_loss})
    tracker.close()
    if saved[-1] != step:
        save(step)
    merge = cfg.model.lora is not None and cfg.model.lora.merge_on_save
    final = save_final(accelerator, model, files, out, merge_lora=merge)
    if main:
        from r1lab.rewards.verifier import carry_marker

        carry_marker(final, data_path=cfg.data.path, model_path=cfg.model.path)  # a generative verifier's
        write_state(out, "complete", step=step, total_steps=total, final=str(final))
    return final


CORDA_SAMPLES = 256  # training examples lora.init corda calibrates on (CorDA's own setting)


def _corda_calibration(cfg: SFTConfig, read: Any) -> Any:
    """For lora.init corda: a function that runs the model (no grad) on the first CORDA_SAMPLES examples, one
    per forward (peft's covariance hook takes one unpadded sequence at a time)."""
    if cfg.model.lora is None or cfg.model.lora.init != "corda":
        return None

    @torch.no_grad()
    def run(model: Any, tokenizer: Any) -> None:
        examples = build_sft_dataset(cfg.data, tokenizer, read=read)
        for i in range(min(CORDA_SAMPLES, len(examples))):
            model(input_ids=torch.tensor([examples[i]["input_ids"]], device=model.device), use_cache=False)

    return run


def _collate(cfg: SFTConfig, examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    return collate(examples, pad_id, packing=cfg.packing, max_length=cfg.data.max_length)


def _shifted_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """targets[b, t] = label of token t+1 (what position t predicts); -100 where nothing is learned,
    including the first token of each packed sequence (it is not predicted from the previous one)."""
    targets = batch["labels"][:, 1:].clone()
    if "position_ids" in batch:
        targets[batch["position_ids"][:, 1:] == 0] = IGNORE_INDEX
    return targets


def _forward_loss(
    model: Any, batch: dict[str, torch.Tensor], targets: torch.Tensor, loss_fn: Any, device: torch.device
) -> torch.Tensor:
    """Summed loss of one micro-batch; the LM head runs only on positions that have a target."""
    logits = target_logits(model, batch, targets, device)  # [K, V]
    summed, _ = loss_fn(logits, targets[targets != IGNORE_INDEX].to(device))
    return summed


def _clip(accelerator: Any, model: Any, max_norm: float | None) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is None:  # still report the norm (get_total_norm also sums FSDP2's gradient shards)
        return float(torch.nn.utils.get_total_norm([p.grad for p in params]))
    return float(accelerator.clip_grad_norm_(params, max_norm))


@torch.no_grad()
def evaluate(
    model: Any,
    examples: Any,
    cfg: SFTConfig,
    accelerator: Any,
    loss_fn: Any,
    pad_id: int,
    batch_of: Callable[[list[dict[str, Any]], int], dict[str, torch.Tensor]] | None = None,
) -> float:
    """Mean target-token NLL over a held-out set (sharded over ranks, summed across them); `batch_of`
    (examples, pad id) -> batch, the text `collate` of cfg by default."""
    batch_of = batch_of or functools.partial(_collate, cfg)
    model.eval()
    inner = accelerator.unwrap_model(model)  # no DDP hooks: ranks may run different numbers of batches
    mine = list(range(accelerator.process_index, len(examples), accelerator.num_processes))
    total = torch.zeros(2, device=accelerator.device)
    with full_weights(inner):  # FSDP2: whole weights, so ranks may run different numbers of batches
        for i in range(0, len(mine), cfg.train.batch_size):
            batch = batch_of([examples[j] for j in mine[i : i + cfg.train.batch_size]], pad_id)
            targets = _shifted_targets(batch)
            with accelerator.autocast():
                summed = _forward_loss(inner, batch, targets, loss_fn, accelerator.device)
            total += torch.stack([summed.float(), (targets != IGNORE_INDEX).sum().float().to(summed.device)])
    total = reduce_sum(total)
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()
