"""Outcome reward model (ORM): one linear loop on the SFT loop's building blocks, as DPO uses them.

The model is the input causal LM's body under a fresh one-label score head (r1lab.rewards.reward_model_io),
read at the last token of the chat-templated (prompt, completion). Loss of an optimizer step = (sum of
per-example losses over every micro-batch on every rank) / (examples in the whole accumulated batch), so
gradient accumulation and extra processes give the large-batch update:
  bce            rows (prompt, completion, label 0/1)
  bradley_terry  pairs (prompt, chosen, rejected); chosen and rejected run in one forward
  prm_bce        process reward model: rows (prompt, steps, labels), the score read at each step's separator
                 token (r1lab.data.prm_data), a row's loss the mean BCE over its steps
Held-out rows (data.eval_path or data.eval_fraction) are scored every train.eval_every steps and after the last
one: eval/loss, eval/accuracy (bce: σ(r) > 0.5 matches the label; pairs: r_c > r_r), eval/auc (rank-based;
pairs: chosen vs rejected rewards pooled), eval/ece (10 bins; bce: of σ(r); pairs: of σ(r_c - r_r), each pair
counted both ways round); prm_bce: eval/{loss, step_accuracy, step_auc, step_ece} over every held-out step and
eval/first_error_accuracy (the first step scored below 0, or none, is the row's first 0 label, or none); the
last evaluation is also written to results.json. `final/` is a full
AutoModelForSequenceClassification folder (a LoRA adapter is merged into it) with reward_model.json.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from r1lab.algorithms.reward_losses import PAIRWISE, REWARD_LOSSES, STEPWISE, auc, ece, first_error
from r1lab.config import RewardModelConfig, dump_config
from r1lab.data.prm_data import build_step_dataset, read_step_data
from r1lab.data.reward_data import build_reward_dataset, pad_right, read_reward_data
from r1lab.rewards.reward_model_io import build_reward_model, token_scores, write_marker
from r1lab.stages.sft import _clip
from r1lab.training.accel import build_accelerator, prepare_model, seed_everything
from r1lab.training.backends import require_backends
from r1lab.training.checkpoint import on_main, save_checkpoint, save_final
from r1lab.training.data_order import EpochOrder, shard
from r1lab.training.distributed import reduce_sum
from r1lab.training.interrupt import StopFlag, record_stop
from r1lab.training.optim import build_optimizer, build_scheduler
from r1lab.training.resume import restore, resume_point
from r1lab.training.rundir import ensure_writable, write_state
from r1lab.training.tracking import Tracker, console

RESULTS = "results.json"


def run_reward_model(cfg: RewardModelConfig) -> Path:
    """Train an ORM; write `final/` (+ reward_model.json), checkpoints, metrics.jsonl, config.yaml, state.json
    and (with held-out data) results.json in cfg.train.output_dir. Returns the final folder."""
    train = cfg.train
    loss_fn = REWARD_LOSSES.get(cfg.loss)
    pairwise, stepwise = cfg.loss in PAIRWISE, cfg.loss in STEPWISE
    require_backends(train.report_to)
    out = ensure_writable(train.output_dir)
    accelerator, precision = build_accelerator(train, cfg.model)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    seed_everything(train.seed)

    resume_from = resume_point(train, out)
    if stepwise:  # the rows are read and checked before the model loads
        read = read_step_data(cfg.data, seed=train.seed)
    else:
        read = read_reward_data(cfg.data, pairwise=pairwise, loss=cfg.loss, seed=train.seed)
    model, tokenizer = build_reward_model(cfg.model, trainable=True)
    if stepwise:
        dataset = build_step_dataset(cfg.data, tokenizer, read, cfg.step_sep)
    else:
        dataset = build_reward_dataset(cfg.data, tokenizer, read)
    lengths = [sum(len(s) for s in ex["ids"]) for ex in dataset]
    global_batch = train.batch_size * train.grad_accum * world
    order = EpochOrder(len(dataset), global_batch, train.seed, shuffle=cfg.data.shuffle)
    total = train.max_steps or max(1, math.ceil(train.epochs * order.steps_per_epoch))

    model = prepare_model(accelerator, model, train)
    optimizer = accelerator.prepare(build_optimizer(model, cfg.optim))
    scheduler = build_scheduler(optimizer, cfg.optim, total)
    inner = accelerator.unwrap_model(model)
    pad_id, device = tokenizer.pad_token_id, accelerator.device
    held = dataset.eval or []

    start = 0
    if resume_from is not None:
        must_match = {"global_batch": (global_batch, "train.batch_size x train.grad_accum x processes")}
        start = int(restore(resume_from, accelerator, model, optimizer, scheduler, must_match)["step"])
    if main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
        write_state(out, "running", step=start, total_steps=total)
        unit = "pairs" if pairwise else "rows"
        console.print(
            f"reward model ({cfg.loss}): {len(dataset)} {unit} ({dataset.stats}), {len(held)} held out, "
            f"{total} steps of {global_batch}, {world} process(es), precision {precision}"
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

    def rewards_of(net: Any, examples: list[dict[str, Any]]) -> Tensor:
        """[B, 1] rewards (pointwise), [B, 2] (chosen, rejected) or [B, S] step scores (0 past a row's steps)."""
        ids, mask = pad_right([s for ex in examples for s in ex["ids"]], pad_id)
        if stepwise:
            positions = pad_right([ex["positions"] for ex in examples], 0)[0].to(device)
            with accelerator.autocast():
                scores = token_scores(net, ids.to(device), mask.to(device))
            present = pad_right([ex["label"] for ex in examples], 0)[1].to(device)
            return scores.gather(1, positions) * present
        with accelerator.autocast():
            logits = net(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        return logits[:, 0].float().view(len(examples), -1)

    def labels_of(examples: list[dict[str, Any]]) -> Tensor:
        if stepwise:  # [B, S], -1 past a row's steps
            return pad_right([[y + 1 for y in ex["label"]] for ex in examples], 0)[0].to(device).float() - 1
        return torch.tensor([float(ex["label"]) for ex in examples], device=device)

    def losses_and_hits(r: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if stepwise:  # per row: mean BCE and share of steps right
            present = (y >= 0).float()
            return loss_fn(r, y), (((r > 0).float() == y).float() * present).sum(-1) / present.sum(-1)
        if pairwise:
            return loss_fn(r[:, 0], r[:, 1]), (r[:, 0] > r[:, 1]).float()
        return loss_fn(r[:, 0], y), ((r[:, 0] > 0).float() == y).float()

    def micro_loss(ids: list[int], last: bool) -> Tensor:
        """Backward of one micro-batch's share of the step loss; returns its summed (loss, correct)."""
        examples = [dataset[i] for i in ids]
        with nullcontext() if last else accelerator.no_sync(model):
            losses, hits = losses_and_hits(rewards_of(model, examples), labels_of(examples))
            # DDP averages gradients over ranks, so multiply by `world` to get a plain global sum.
            accelerator.backward(losses.sum() * world / global_batch)
        return torch.stack([losses.detach().sum(), hits.sum()])

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        """Every rank scores every held-out example (no collective), through the unwrapped model."""
        model.eval()
        chunks = [held[i : i + train.batch_size] for i in range(0, len(held), train.batch_size)]
        if stepwise:
            scored = [(rewards_of(inner, c), labels_of(c)) for c in chunks]
            model.train()
            return held_out_step_metrics(scored, loss_fn)
        r = torch.cat([rewards_of(inner, c) for c in chunks])
        model.train()
        return held_out_metrics(r, labels_of(held), pairwise, losses_and_hits)

    step, began, window, window_time = start, time.perf_counter(), 0, 0.0
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

                window += global_batch
                window_time += time.perf_counter() - step_began
                if step % train.log_every == 0 or step == total:
                    loss, accuracy = (reduce_sum(sums) / global_batch).tolist()
                    metrics = {"loss": loss, "accuracy": accuracy, "lr": lr, "grad_norm": grad_norm}
                    metrics["examples_per_s"] = window / max(window_time, 1e-9)
                    metrics["epoch"] = step / order.steps_per_epoch
                    metrics["elapsed"] = time.perf_counter() - began
                    tracker.log(step, metrics)
                    window, window_time = 0, 0.0
                tracker.advance(step)
                if held and train.eval_every and step % train.eval_every == 0 and step < total:
                    tracker.log(step, evaluate())
                if train.save_every and step % train.save_every == 0 and step < total:
                    save(step)
                stop.check(accelerator)
    except KeyboardInterrupt as stopped:
        record_stop(stopped, step, total, out, main, tracker, save)
        raise

    results = evaluate() if held else None  # and always after the last step
    if results is not None:
        tracker.log(step, results)
    tracker.close()
    if saved[-1] != step:
        save(step)
    if cfg.model.lora is not None:  # the adapter (and the trained score head) merged: a plain folder
        model = inner = inner.merge_and_unload()
    final = save_final(accelerator, model, tokenizer, out, merge_lora=False)
    marker = {
        **({"kind": "prm", "step_sep": cfg.step_sep} if stepwise else {}),
        "base_model": cfg.model.path,
        "loss": cfg.loss,
        "template": "chat",  # the chat template saved with the tokenizer in this folder
        "system_prompt": cfg.data.system_prompt,
        "max_length": cfg.data.max_length,
        "steps": step,
    }
    on_main(accelerator, lambda: write_marker(final, marker))
    if main:
        if results is not None:
            report = {"loss": cfg.loss, "step": step, "held_out": len(held), "metrics": results}
            report.update({"held_out_steps": sum(len(ex["label"]) for ex in held)} if stepwise else {})
            (out / RESULTS).write_text(json.dumps(report, indent=2) + "\n")
        write_state(out, "complete", step=step, total_steps=total, final=str(final))
    return final


def held_out_metrics(r: Tensor, y: Tensor, pairwise: bool, losses_and_hits: Any) -> dict[str, float]:
    """eval/{loss, accuracy, auc, ece} of rewards `r` [N, 1 or 2] (AUC left out when one class only)."""
    losses, hits = losses_and_hits(r, y)
    metrics = {"eval/loss": float(losses.mean()), "eval/accuracy": float(hits.mean())}
    if pairwise:
        scores, classes = r.T.flatten(), torch.cat([torch.ones(len(r)), torch.zeros(len(r))])
        margin = r[:, 0] - r[:, 1]
        probs, truth = torch.sigmoid(torch.cat([margin, -margin])), classes
    else:
        scores, classes = r[:, 0], y
        probs, truth = torch.sigmoid(scores), y
    if 0 < int(classes.sum()) < len(classes):
        metrics["eval/auc"] = auc(scores.cpu(), classes.cpu())
    metrics["eval/ece"] = ece(probs.cpu(), truth.cpu())
    return metrics


def held_out_step_metrics(scored: list[tuple[Tensor, Tensor]], loss_fn: Any) -> dict[str, float]:
    """A PRM's eval/{loss (mean over rows), step_accuracy, step_auc, step_ece (over all steps),
    first_error_accuracy} from (scores, labels) [B, S] chunks (label -1: no step)."""
    losses = torch.cat([loss_fn(r, y) for r, y in scored])
    present = [y >= 0 for _, y in scored]
    scores = torch.cat([r[m] for (r, _), m in zip(scored, present, strict=True)]).cpu()
    labels = torch.cat([y[m] for (_, y), m in zip(scored, present, strict=True)]).cpu()
    # predicted first error: the first step scored <= 0 (as a 0 label where the row has a step, else -1)
    predicted = [first_error(torch.where(y >= 0, (r > 0).float(), -1.0)) for r, y in scored]
    truth = [first_error(y) for _, y in scored]
    first = torch.cat([(p == t).float() for p, t in zip(predicted, truth, strict=True)])
    metrics = {
        "eval/loss": float(losses.mean()),
        "eval/step_accuracy": float(((scores > 0).float() == labels).float().mean()),
        "eval/first_error_accuracy": float(first.mean()),
        "eval/step_ece": ece(torch.sigmoid(scores), labels),
    }
    if 0 < int(labels.sum()) < len(labels):
        metrics["eval/step_auc"] = auc(scores, labels)
    return metrics
