"""The checks `r1lab doctor` shares between SFT and RL stages: template masks, the accumulation check, step cost,
eval/train overlap. Each returns a `Check`; none of them trains (gradients are computed and thrown away)."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from r1lab.data.contamination import check_contamination
from r1lab.data.tokenize import IGNORE, tokenize_conversation
from r1lab.rollout.hf import _eos_ids

SHOWN_TOKENS = 48  # tokens of each example listed one by one (the head of the example and every turn's end)


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail" | "skip"
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def render(self) -> str:
        lines = [f"[{self.status.upper()}] {self.name}: {self.summary}"]
        lines += [f"    {d}" for d in self.details]
        if self.fix:
            lines.append(f"    fix: {self.fix}")
        return "\n".join(lines)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids generation stops at: the tokenizer's EOS and the model's generation_config eos ids (the sampler's)."""
    return _eos_ids(model, tokenizer)


def trained_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of every run of trained (label != -100) positions."""
    spans, start = [], None
    for t, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = t
        elif label == IGNORE and start is not None:
            spans.append((start, t))
            start = None
    return spans


def template_check(
    tokenizer: Any, model: Any, conversations: list[tuple[list[dict[str, Any]], int]], source: str
) -> Check:
    """Mask token by token of the first two conversations, and whether every trained assistant turn ends in a
    token generation stops at (else the model never learns to stop). `conversations`: (messages, first_target)."""
    stops = set(stop_token_ids(model, tokenizer))
    names = ", ".join(f"{tokenizer.convert_ids_to_tokens(i)!r} ({i})" for i in sorted(stops)) or "(none)"
    details, bad = [f"generation stops at: {names}"], []
    for n, (messages, first) in enumerate(conversations):
        ids, labels = tokenize_conversation(tokenizer, messages, first)
        spans = trained_spans(labels)
        if not spans:
            bad.append((n, "no token is trained"))
        for _, end in spans:
            if ids[end - 1] not in stops:
                bad.append((n, f"a trained turn ends in {tokenizer.convert_ids_to_tokens(ids[end - 1])!r}"))
        if n < 2:
            details.append(
                f"example {n + 1} ({len(ids)} tokens, {sum(b - a for a, b in spans)} trained; T = in loss):"
            )
            details += _token_lines(tokenizer, ids, labels, spans)
    if bad:
        n, what = bad[0]
        return Check(
            "chat template",
            "fail",
            f"{len(bad)} of {len(conversations)} examples checked: {what} (example {n + 1} of {source}), so the "
            "model is never taught to stop",
            details,
            "set model.chat_template to a template whose assistant turn ends with the EOS token, or the "
            "tokenizer's eos_token to the template's end-of-turn token",
        )
    return Check(
        "chat template",
        "ok",
        f"every trained assistant turn of {len(conversations)} examples ends in a stop token, which is trained",
        details,
    )


def _token_lines(
    tokenizer: Any, ids: list[int], labels: list[int], spans: list[tuple[int, int]]
) -> list[str]:
    shown = set(range(min(SHOWN_TOKENS, len(ids))))
    for _, end in spans:  # the end of every trained turn, with 2 tokens either side
        shown |= set(range(max(0, end - 3), min(len(ids), end + 2)))
    lines, last = [], -1
    for t in sorted(shown):
        if t != last + 1:
            lines.append("      ...")
        piece = tokenizer.convert_ids_to_tokens(ids[t])
        lines.append(f"      {t:5d} {ids[t]:7d} {'T' if labels[t] != IGNORE else '.'} {piece!r}")
        last = t
    return lines


def accumulation_check(loss_of: Callable[[list[int], float], torch.Tensor], tokens_of: Callable[[list[int]], float],
                       model: Any, rows: list[int], precision: str) -> Check:  # fmt: skip
    """The gradient of one micro-batch of 2k rows against that of two micro-batches of k, accumulated as the
    stage does: `loss_of(rows, total_tokens)` is the stage's summed loss of those rows over the step's token
    count, `tokens_of(rows)` that count."""
    if len(rows) < 2:
        return Check("accumulation", "skip", "fewer than 2 examples")
    half = len(rows) // 2
    rows = rows[: 2 * half]
    total = tokens_of(rows)
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()  # no dropout: both ways must see the same function
    try:
        one = _grad(params, [loss_of(rows, total)])
        two = _grad(params, [loss_of(rows[:half], total), loss_of(rows[half:], total)])
    finally:
        model.train(was_training)
    one, two = one.double(), two.double()  # float32 sums over 100M+ entries drift: a cosine of 1.03
    cosine = float(torch.dot(one, two) / (one.norm() * two.norm()).clamp(min=1e-300))
    rel = float((one - two).norm() / one.norm().clamp(min=1e-30))
    tol = 1e-3 if precision == "fp32" else 3e-2
    summary = (
        f"one micro-batch of {2 * half} vs 2 of {half}: gradient norms {float(one.norm()):.6g} and "
        f"{float(two.norm()):.6g}, relative difference {rel:.2e}, cosine {cosine:.6f} (tolerance {tol:g}, {precision})"
    )
    if not math.isfinite(rel) or rel > tol:
        return Check(
            "accumulation",
            "fail",
            summary,
            fix="the loss must be summed over tokens and divided once by the step's token count (not averaged "
            "per micro-batch), and the model's output must not depend on the padding of a batch: check "
            "the attention mask and padding side, or train in fp32",
        )
    return Check("accumulation", "ok", summary)


def _grad(params: list[torch.Tensor], losses: list[torch.Tensor]) -> torch.Tensor:
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for loss in losses:
        got = torch.autograd.grad(loss, params, allow_unused=True)
        for g, d in zip(grads, got, strict=True):
            if d is not None:
                g += d.float()
    return torch.cat([g.flatten() for g in grads])


def step_check(run_micro: Callable[[], None], model: Any, micro_batches: int, extra_seconds: float = 0.0,
               what: str = "") -> Check:  # fmt: skip
    """Time one micro-batch forward + backward (`run_micro`) and estimate a step and its memory: weights,
    gradients and AdamW's two moments (from the parameter counts) plus the activations measured here."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    began = time.perf_counter()
    run_micro()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    if cuda:
        activations = torch.cuda.max_memory_allocated(device) - before
        how = "CUDA peak during the micro-batch"
    else:
        activations = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss)
        how = "growth of the process's peak RSS (0 when an earlier peak was higher)"
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grads, adam = trainable * 4, trainable * 8  # fp32 gradients and two fp32 moments
    total = weights + grads + adam + activations
    step = seconds * micro_batches + extra_seconds
    details = [
        f"weights {_gb(weights)}, gradients {_gb(grads)}, AdamW moments {_gb(adam)} ({trainable:,} trainable), "
        f"activations {_gb(activations)} ({how})",
        f"one micro-batch forward + backward {seconds:.3f} s x {micro_batches} micro-batches"
        + (f" + {extra_seconds:.3f} s {what}" if extra_seconds else ""),
    ]
    return Check(
        "step cost", "ok", f"about {step:.2f} s per optimizer step, about {_gb(total)} of memory", details
    )


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def overlap_check(train: Any, eval_path: str | None, columns: dict[str, str]) -> Check:
    """Whether the eval set's prompts are in the training data (`r1lab data check`'s exact and near duplicates)."""
    if not eval_path:
        return Check("eval overlap", "skip", "no eval set (data.eval_path, or the recipe's eval data)")
    report = check_contamination(train.path, eval_path, columns=columns, train_split=train.split)
    examples = [f"test #{m.test} = train #{m.train} ({m.score:.0%}): {m.test_text[:80]!r}" for m in
                (report.exact + report.near)[:3]]  # fmt: skip
    if report.contaminated:
        return Check(
            "eval overlap",
            "fail",
            report.summary(),
            examples,
            f"remove those problems from one side; `r1lab data check {train.path} {eval_path} --json F` lists them",
        )
    return Check("eval overlap", "ok", report.summary())
