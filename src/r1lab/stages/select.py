"""The selectors of `r1lab data select` that need the target model (registered into
`r1lab.data.select.SELECTORS` on import):

- `fit` (GRAPE, "The Best Instruction-Tuning Data are Those That Fit"): candidates are records that share an
  instruction (the conversation before its last assistant turn); per instruction the candidate response with
  the highest length-normalised log-probability under the target model is kept, and of those the K that fit
  best. Cost: one forward per candidate (no generation).
- `pass_rate` (RIF-RFT's filter, offline): sample n completions per prompt with the HF rollout engine, score
  them with the task's (or the given) reward, drop prompts solved always or never, keep the K whose pass rate
  is nearest 1/2 (GRPO learns most where p(1-p) is largest); `pass_rate` and `pass_rate_n` go into each record.
  Cost: n + 1 generations per prompt (the eval runner's greedy one as well; its correctness is kept too).
- `diversity` (Diversify and Conquer): embed each record as the target model's mean last hidden state over its
  text, k-means (scikit-learn; min(64, K) clusters as the paper's K = 64, seeded), then take records round-robin
  across the clusters (each cluster in a seeded random order) until K. Cost: one forward per record + k-means.
- `curation` (CLEAR) and `indicators` (InstructMining): in select_curation.py and select_indicators.py.
"""

from __future__ import annotations

import json
import random
from typing import Any

import torch

from r1lab.config import DataConfig, EvalConfig, ModelConfig
from r1lab.data import build_prompt_dataset, read_sft_data, tokenize_conversation
from r1lab.data.select import SELECTORS, Picked, SelectOptions, need_model
from r1lab.errors import UserError
from r1lab.eval.pass_rate import kept_by_pass_rate, pass_rate_counts, pass_rates
from r1lab.eval.runner import generate_and_score
from r1lab.models import load_model, load_tokenizer
from r1lab.rewards import RewardRunner
from r1lab.stages import select_curation, select_indicators  # noqa: F401  (register them)
from r1lab.stages.select_signals import WHOLE, reward_specs, target_logprob
from r1lab.tasks import get_task
from r1lab.training.tracking import console


@SELECTORS.register("fit")
def select_fit(records: list[dict[str, Any]], options: SelectOptions) -> Picked:
    model, tokenizer = load_model(ModelConfig(path=need_model(options, "fit")), trainable=False)
    fix = "give records with an assistant turn (messages) or a completion column"
    try:
        read = read_sft_data(DataConfig(path=options.source, shuffle=False, max_length=WHOLE))
    except UserError as e:  # a prompt-only pool, say
        raise UserError(
            f"selection 'fit' scores candidate responses: {e.what}", where=e.where, fix=fix
        ) from None
    if not read.conversations:
        raise UserError(
            f"selection 'fit' scores candidate responses, but no record of {options.source} has one",
            where=options.source,
            fix=fix,
        )
    best: dict[str, tuple[float, int]] = {}  # instruction -> (mean log-prob, record index) of its best one
    for number, conv in read.conversations:
        ids, labels = tokenize_conversation(tokenizer, conv.messages, conv.first_target)
        score = mean_logprob(model, ids, labels)
        key = json.dumps(conv.messages[:-1], sort_keys=True)
        if key not in best or score > best[key][0]:
            best[key] = (score, number - 1)
    if options.k > len(best):
        raise UserError(
            f"--k {options.k} is more than the pool's {len(best)} instructions (fit keeps one response each, "
            f"from {len(read.conversations)} candidates)",
            where="--k",
            fix=f"ask for at most {len(best)}",
        )
    console.print(f"fit: {len(read.conversations)} candidates for {len(best)} instructions")
    ranked = sorted(best.values(), key=lambda pair: (-pair[0], pair[1]))[: options.k]
    return [(i, {**records[i], "fit_logprob": score}) for score, i in ranked]


@torch.no_grad()
def mean_logprob(model: Any, ids: list[int], labels: list[int]) -> float:
    """Mean log-probability of the target tokens (labels != -100) of one tokenised conversation."""
    logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
    total, n = target_logprob(logits, labels)
    return total.item() / n if n else float("-inf")  # a response cut away entirely cannot fit


@SELECTORS.register("pass_rate")
def select_pass_rate(records: list[dict[str, Any]], options: SelectOptions) -> Picked:
    path = need_model(options, "pass_rate")
    task = get_task(options.task) if options.task else None
    specs = reward_specs(options)
    if not specs:
        raise UserError(
            "selection 'pass_rate' scores samples with a reward",
            where="--reward / --task",
            fix="name one, e.g. --reward math, or --task T to use that task's reward",
        )
    if options.n < 2:
        raise UserError("--n must be at least 2 to tell always/never solved prompts apart", where="--n")
    model_cfg = ModelConfig(path=path)
    tokenizer = load_tokenizer(model_cfg)
    system = task.system_prompt if task else None
    data = DataConfig(path=options.source, shuffle=False, max_length=WHOLE, system_prompt=system)
    prompts = list(build_prompt_dataset(data, tokenizer))
    if len(prompts) != len(records):
        raise UserError(
            f"{len(records) - len(prompts)} records of {options.source} have no prompt to sample from",
            where=options.source,
            fix="give every record a prompt (or messages ending in a user turn)",
        )
    eval_cfg = EvalConfig(
        data=options.source, n=options.n, k=[1], temperature=options.temperature,
        max_new_tokens=options.max_new_tokens, batch_size=options.batch_size,
    )  # fmt: skip
    with RewardRunner(specs) as rewards:
        rewards.check_columns(set.intersection(*(set(p.columns) for p in prompts)))  # e.g. no gold answers
        model, tokenizer = load_model(model_cfg, trainable=False)
        rows = generate_and_score(model, tokenizer, prompts, eval_cfg, rewards)
    rates, greedy = pass_rates(rows, len(records))  # (shared with RL's pass_rate_filter)
    counts = pass_rate_counts(rates)
    console.print(
        f"pass_rate: of {len(records)} prompts {counts['always']} always solved, {counts['never']} never solved "
        f"(n = {options.n}), {counts['mixed']} kept as candidates"
    )
    mixed = sorted(kept_by_pass_rate(rates, "both"), key=lambda i: (abs(rates[i] - 0.5), i))
    return [
        (i, {**records[i], "pass_rate": rates[i], "pass_rate_n": options.n, "greedy_correct": greedy[i]})
        for i in mixed[: options.k]
    ]


CLUSTERS = 64  # Diversify and Conquer's K


@SELECTORS.register("diversity")
def select_diversity(records: list[dict[str, Any]], options: SelectOptions) -> Picked:
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise UserError(
            "selection 'diversity' clusters with scikit-learn, which is not installed",
            fix="pip install 'r1lab[select]' (or pip install scikit-learn)",
        ) from None
    model, tokenizer = load_model(ModelConfig(path=need_model(options, "diversity")), trainable=False)
    vectors = torch.stack([mean_hidden_state(model, tokenizer, record_text(r)) for r in records]).numpy()
    n_clusters = min(CLUSTERS, options.k, len(records))
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=options.seed).fit_predict(vectors)
    rng = random.Random(options.seed)
    clusters = [[i for i, label in enumerate(labels) if label == c] for c in range(n_clusters)]
    for members in clusters:
        rng.shuffle(members)
    console.print(
        f"diversity: {len(records)} records in {n_clusters} clusters of {sorted(map(len, clusters))}"
    )
    picked: list[int] = []
    while len(picked) < options.k:  # one from each cluster in turn, skipping the emptied ones
        for members in clusters:
            if members and len(picked) < options.k:
                picked.append(members.pop())
    return [(i, records[i]) for i in picked]


def record_text(record: dict[str, Any]) -> str:
    """The text a record is embedded by: its messages' contents, else its string columns, in order."""
    messages = record.get("messages")
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return "\n".join(v for v in record.values() if isinstance(v, str))


@torch.no_grad()
def mean_hidden_state(model: Any, tokenizer: Any, text: str, max_tokens: int = 1024) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False).input_ids[:max_tokens] or [tokenizer.pad_token_id]
    out = model(
        input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True, use_cache=False
    )
    return out.hidden_states[-1][0].float().mean(dim=0).cpu()
