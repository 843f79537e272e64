"""`curation` (registered into `r1lab.data.select.SELECTORS` on import): drop the examples the target model is
confidently wrong on, after CLEAR (Chen & Mueller, "Automated Data Curation for Robust Language Model
Fine-Tuning", 2024), which filters the responses an LLM's confidence marks as bad before fine-tuning.

The rule: a record's confidence is the mean log-probability of its given response tokens under the target model
(its geometric-mean token probability, exp of it). When a verifier is named (--task T uses T's reward, or
--reward R), a given response the verifier fails is wrong whatever the model thinks, and is dropped first; the
rest are ranked by confidence, and the K most confident kept. So the records dropped are those that fail the
verifier, then those with the highest loss under the model. Without a verifier only the confidence ranks.
Each kept record gains `curation_logprob` and, with a verifier, `curation_verified`.
Cost: one forward per record (no generation) + one verifier call per record.
"""

from __future__ import annotations

from typing import Any

from r1lab.config import ModelConfig
from r1lab.data.select import SELECTORS, Picked, SelectOptions, need_model
from r1lab.models import load_model
from r1lab.stages.select_signals import measure, read_responses, verify_given
from r1lab.training.tracking import console


@SELECTORS.register("curation")
def select_curation(records: list[dict[str, Any]], options: SelectOptions) -> Picked:
    path = need_model(options, "curation")
    convs = read_responses(options.source, "curation")
    # the verifier runs before the model loads: a pool without gold answers fails fast
    verified = verify_given(options, convs, "curation")
    model, tokenizer = load_model(ModelConfig(path=path), trainable=False)
    logprobs = [measure(model, tokenizer, conv).logprob for _, conv in convs]
    passes = verified or [True] * len(convs)
    order = sorted(range(len(convs)), key=lambda j: (not passes[j], -logprobs[j], j))[: options.k]
    failed = passes.count(False)
    kept_failing = sum(not passes[j] for j in order)
    console.print(
        f"curation: {len(convs)} records"
        + (f", {failed} fail the verifier (dropped first)" if verified is not None else ", no verifier")
        + f"; kept the {options.k} most confident"
        + (f" ({kept_failing} of them failing the verifier: K is above the {len(convs) - failed} that pass)"
           if kept_failing else "")
    )  # fmt: skip
    picked = []
    for j in order:
        i = convs[j][0]
        extra: dict[str, Any] = {"curation_logprob": logprobs[j]}
        if verified is not None:
            extra["curation_verified"] = verified[j]
        picked.append((i, {**records[i], **extra}))
    return picked
