"""`indicators` (InstructMining, Cao et al. 2023; registered into `r1lab.data.select.SELECTORS` on import): a
linear model on cheap indicators predicts how much an example would lower the loss on held-out data, and the K
examples with the lowest predicted loss are kept.

Indicators per record, from one forward of the target model: the response length (tokens), its perplexity as
log-perplexity (the mean token loss), its kNN distance (mean Euclidean distance of its mean hidden state to its
`neighbours` nearest other records: how unlike the rest it is), and, when a verifier is named (--task/--reward),
whether the given response passes it. InstructMining fits the rule to the evaluation loss of models fine-tuned
on many data subsets; this is its one-step, per-example form: for `probe_size` records drawn from the pool
(seeded), the target is the change of the mean loss on the held-out `--probe` file after one SGD step (lr
`probe_lr`) on that record from the target model's weights. scikit-learn's LinearRegression maps indicators to
that change, and predicts it for every record. Kept records gain `indicators` and `predicted_loss_delta`.
Cost: one forward per record, plus per probed record one forward + backward and one forward per probe example
(and a copy of the weights, to restore them after each step).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from r1lab.config import ModelConfig
from r1lab.data import tokenize_conversation
from r1lab.data.formats import Conversation
from r1lab.data.select import SELECTORS, Picked, SelectOptions, need_model
from r1lab.errors import UserError
from r1lab.models import load_model
from r1lab.stages.select_signals import measure, read_responses, target_logprob, verify_given
from r1lab.training.tracking import console


@SELECTORS.register("indicators")
def select_indicators(records: list[dict[str, Any]], options: SelectOptions) -> Picked:
    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        raise UserError(
            "selection 'indicators' fits its rule with scikit-learn, which is not installed",
            fix="pip install 'r1lab[select]' (or pip install scikit-learn)",
        ) from None
    path = need_model(options, "indicators")
    if not options.probe:
        raise UserError(
            "selection 'indicators' fits its rule to the loss on a held-out probe set",
            where="--probe",
            fix="name an SFT file not in the pool, e.g. r1lab data make countdown --split test --n 32",
        )
    convs = read_responses(options.source, "indicators")
    probe = [conv for _, conv in read_responses(options.probe, "indicators")]
    verified = verify_given(options, convs, "indicators")
    names = ["tokens", "log_ppl", "knn_distance"] + (["verified"] if verified is not None else [])
    probed = min(options.probe_size, len(convs))
    if probed < len(names) + 1 or options.neighbours < 1 or options.neighbours >= len(convs):
        raise UserError(
            f"selection 'indicators' fits {len(names)} indicators on {probed} probed records with "
            f"{options.neighbours} neighbours, from a pool of {len(convs)}",
            where="--probe-size / --neighbours",
            fix=f"probe at least {len(names) + 1} records and use between 1 and {len(convs) - 1} neighbours",
        )
    model, tokenizer = load_model(ModelConfig(path=path), trainable=False)
    signals = [measure(model, tokenizer, conv) for _, conv in convs]
    hidden = torch.stack([s.hidden for s in signals]).numpy()
    distances, _ = NearestNeighbors(n_neighbors=options.neighbours + 1).fit(hidden).kneighbors(hidden)
    features = np.array(
        [
            [s.tokens, -s.logprob, float(distances[j, 1:].mean())]
            + ([float(verified[j])] if verified is not None else [])
            for j, s in enumerate(signals)
        ]
    )
    sample = sorted(random.Random(options.seed).sample(range(len(convs)), probed))
    targets = probe_deltas(model, tokenizer, [convs[j][1] for j in sample], probe, options.probe_lr)
    predicted = fit_and_predict(features[sample], np.array(targets), features)
    console.print(
        f"indicators: {len(convs)} records, rule fitted on {probed} probed ones against {len(probe)} probe "
        f"examples (lr {options.probe_lr})"
    )
    order = sorted(range(len(convs)), key=lambda j: (predicted[j], j))[: options.k]
    return [
        (
            convs[j][0],
            {
                **records[convs[j][0]],
                "indicators": dict(zip(names, map(float, features[j]), strict=True)),
                "predicted_loss_delta": float(predicted[j]),
            },
        )
        for j in order
    ]


def fit_and_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_all: np.ndarray) -> np.ndarray:
    """The linear rule fitted on (x_fit, y_fit), applied to x_all; indicators are standardised on x_all first
    (a constant one becomes 0), so the coefficients compare."""
    from sklearn.linear_model import LinearRegression

    mean, std = x_all.mean(axis=0), x_all.std(axis=0)
    std[std == 0] = 1.0
    rule = LinearRegression().fit((x_fit - mean) / std, y_fit)
    return rule.predict((x_all - mean) / std)


def probe_loss(model: Any, tokenizer: Any, probe: list[Conversation]) -> float:
    """Mean over the probe examples of their mean response-token loss."""
    return float(np.mean([-measure(model, tokenizer, conv).logprob for conv in probe]))


def probe_deltas(
    model: Any, tokenizer: Any, examples: list[Conversation], probe: list[Conversation], lr: float
) -> list[float]:
    """For each example: the probe loss after one SGD step (lr) on that example's mean token loss, minus the
    probe loss before; the weights are restored after each."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    saved = [p.detach().clone() for p in params]
    before = probe_loss(model, tokenizer, probe)
    deltas = []
    for conv in examples:
        ids, labels = tokenize_conversation(tokenizer, conv.messages, conv.first_target)
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
            total, n = target_logprob(logits, labels)
            grads = torch.autograd.grad(-total / n, params, allow_unused=True) if n else [None] * len(params)
            for p in params:
                p.requires_grad_(False)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    p.sub_(lr * g)
            deltas.append(probe_loss(model, tokenizer, probe) - before)
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return deltas
