"""Generative-verifier data (`r1lab data verifier-sft`): candidate solutions labelled by the task's verifier,
written as judge rows for SFT and RL.

Candidates come from a model (`MODEL --task T` or `--data FILE --reward R`: --n samples per prompt at
--temperature plus the one greedy completion, the eval runner's rows as `data distill` draws them; --engine
hf | vllm | auto, the one that ran recorded) or from a
file of samples (`--from FILE`: rows with `prompt` and `completion` and the columns the reward reads). Each is
scored by the reward; its accuracy (>= 1) is the label. A row is

  {prompt: judge_prompt(problem, candidate), completion: judgement(candidate, label), label: correct|incorrect,
   problem, candidate, provenance: {model, sampling, rewards, source, problem index, sample, score}}

so `kind: sft` trains on prompt -> completion and `kind: rl` with `rewards: [{name: verdict}]` checks the
verdict line against `label`. `--balance` keeps as many incorrect as correct rows (a seeded draw of the larger
class). Duplicate (problem, candidate) pairs are written once. A result with no row, or with rows of one class
only, is refused with the counts (a verifier cannot learn to discriminate from one class). Beside the file,
F.verifier.json marks it as verifier data: an SFT stage trained on it marks its final/ (rewards.verifier).
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, EvalConfig, ModelConfig, RewardSpec, RolloutConfig
from r1lab.data import build_prompt_dataset, write_jsonl
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.rewards.verifier import CORRECT, INCORRECT, judge_prompt, judgement, marker_meta, sidecar
from r1lab.rollout.engine_choice import check_engine_name
from r1lab.stages.distill import normalised
from r1lab.tasks import get_task
from r1lab.training.tracking import console

WHERE = "r1lab data verifier-sft"


@dataclass
class VerifierDataOptions:
    out: Path
    model: str | None = None  # sample candidates from this model
    samples: str | None = None  # or label the rows of this file (--from)
    task: str | None = None  # a built-in task: its problems and its reward
    data: str | None = None  # or a prompt file (with rewards)
    rewards: list[str] = field(default_factory=list)  # default: the task's reward
    limit: int = 200  # problems generated for --task
    split: str = "train"
    seed: int = 0
    n: int = 4  # samples per prompt (plus the greedy one)
    temperature: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 8
    engine: str = "hf"
    balance: bool = False


@dataclass
class Candidate:
    problem: int
    text: str  # the problem's user text
    completion: str
    correct: bool
    sample: str  # greedy | sample | file line
    score: float | None = None


def make_verifier_data(opts: VerifierDataOptions) -> dict[str, int]:
    """Sample (or read), label, balance and write the judge rows; returns the counts."""
    if (opts.model is None) == (opts.samples is None):
        raise UserError(
            "give either MODEL (to sample candidates) or --from FILE (samples to label)", where=WHERE
        )
    task = get_task(opts.task) if opts.task else None
    specs = [RewardSpec(name=r) for r in opts.rewards] or ([RewardSpec(name=task.reward)] if task else [])
    if not specs:
        raise UserError("the candidates need a verifier to label them", where=f"{WHERE} --reward",
                        fix="give --task T (its reward) or --reward NAME, e.g. --reward math")  # fmt: skip
    check_engine_name(opts.engine, f"{WHERE} --engine")
    with RewardRunner(specs) as runner:
        if runner.accuracy_index is None:
            raise UserError(f"the rewards {[s.name for s in specs]} have no correctness check to label with",
                            where=f"{WHERE} --reward", fix="add a verifier, e.g. --reward math")  # fmt: skip
        found = _label_file(opts, runner) if opts.samples else _sample(opts, task, runner)
    return _write(opts, found, [s.name for s in specs], task)


def _sample(opts: VerifierDataOptions, task: Any, runner: RewardRunner) -> list[Candidate]:
    from r1lab.eval.runner import generate_and_score
    from r1lab.models import load_model
    from r1lab.rollout.engine_choice import resolve_engine

    if not opts.task and not opts.data:
        raise UserError(
            "sampling needs prompts", where=f"{WHERE} --task / --data", fix="give --task T or --data FILE"
        )
    model, tokenizer = load_model(ModelConfig(path=str(opts.model)), trainable=False)
    # auto resolved here, so the provenance records the engine that ran
    opts.engine = resolve_engine(RolloutConfig(engine=opts.engine), model).engine  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        source = opts.data or str(
            write_jsonl(
                Path(tmp) / "problems.jsonl", task.generate(opts.limit, seed=opts.seed, split=opts.split)
            )
        )
        system = task.system_prompt if task else None
        data = DataConfig(path=source, shuffle=False, max_length=1 << 20, system_prompt=system)
        prompts = list(build_prompt_dataset(data, tokenizer))
        runner.check_columns(set.intersection(*(set(p.columns) for p in prompts)))
        cfg = EvalConfig(data=source, n=opts.n, k=[1], temperature=opts.temperature, max_new_tokens=opts.max_new_tokens,
                         batch_size=opts.batch_size, engine=opts.engine)  # fmt: skip
        rows = generate_and_score(model, tokenizer, prompts, cfg, runner)
    return [
        Candidate(
            r["problem"],
            prompts[r["problem"]].prompt_text,
            r["completion"],
            r["correct"],
            r["kind"],
            r["reward"],
        )
        for r in rows
    ]


def _label_file(opts: VerifierDataOptions, runner: RewardRunner) -> list[Candidate]:
    path = Path(opts.samples or "")
    if not path.is_file():
        raise UserError(f"samples file not found: {path}", where=f"{WHERE} --from",
                        fix="a JSONL file of prompt + completion rows (with the columns the reward reads)")  # fmt: skip
    rows, lines, texts = [], [], []
    for line, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(
                f"not JSON: {e.msg}", where=f"{path}:{line}", fix="one JSON object per line"
            ) from None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str | list) or not isinstance(row.get("completion"), str):
            raise UserError("a sample needs `prompt` (text or messages) and `completion` (text)",
                            where=f"{path}:{line}", fix="e.g. the samples.jsonl an eval or RL run writes")  # fmt: skip
        user = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        texts.append(prompt if isinstance(prompt, str) else (user[-1] if user else ""))
        rows.append(row)
        lines.append(line)
    if not rows:
        raise UserError(f"{path} has no samples", where=f"{WHERE} --from", fix="give a file with samples")
    columns = [{k: v for k, v in r.items() if k not in ("prompt", "completion")} for r in rows]
    runner.check_columns(set.intersection(*(set(c) for c in columns)))
    scored = runner.score([r["completion"] for r in rows], texts, columns)
    assert scored.accuracy is not None  # make_verifier_data checked there is a correctness reward
    problems = {text: i for i, text in enumerate(dict.fromkeys(texts))}  # a distinct prompt: one problem
    return [
        Candidate(problems[text], text, row["completion"], ok == 1.0, f"{path.name}:{line}", float(total))
        for row, text, line, ok, total in (
            zip(rows, texts, lines, scored.accuracy.tolist(), scored.total.tolist(), strict=True)
        )
    ]


def _write(
    opts: VerifierDataOptions, found: list[Candidate], rewards: list[str], task: Any
) -> dict[str, int]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for c in found:
        key = (c.text, normalised(c.completion))
        if key not in seen and c.completion.strip():
            seen.add(key)
            unique.append(c)
    good = [c for c in unique if c.correct]
    bad = [c for c in unique if not c.correct]
    counts = {"candidates": len(found), "unique": len(unique), "correct": len(good), "incorrect": len(bad)}
    if not good or not bad:
        raise UserError(
            f"the verifier labelled {len(good)} of {len(unique)} distinct candidates correct and {len(bad)} incorrect "
            f"({len(found)} drawn): a verifier needs both classes, so no file was written",
            where=WHERE,
            fix="sample more (--n, --limit), at another --temperature, from a stronger or weaker model, or give a "
            "--from file with both outcomes",
        )
    if opts.balance:
        rng = random.Random(opts.seed)
        keep = min(len(good), len(bad))
        good, bad = rng.sample(good, keep), rng.sample(bad, keep)  # row order is restored below
    order = {id(c): i for i, c in enumerate(unique)}
    chosen = sorted(good + bad, key=lambda c: order[id(c)])
    source = (
        f"task {opts.task} ({opts.split}, seed {opts.seed})"
        if task and not opts.samples
        else (opts.samples or opts.data)
    )
    sampling = None if opts.samples else {"n": opts.n, "temperature": opts.temperature,
                                          "max_new_tokens": opts.max_new_tokens, "engine": opts.engine}  # fmt: skip
    rows = [
        {
            "prompt": judge_prompt(c.text, c.completion),
            "completion": judgement(c.completion, c.correct),
            "label": CORRECT if c.correct else INCORRECT,
            "problem": c.text,
            "candidate": c.completion,
            "provenance": {
                "model": opts.model,
                "sampling": sampling,
                "rewards": rewards,
                "source": source,
                "problem": c.problem,
                "sample": c.sample,
                "score": c.score,
            },
        }
        for c in chosen
    ]
    write_jsonl(opts.out, rows)
    sidecar(Path(opts.out)).write_text(json.dumps(marker_meta(str(opts.out)), indent=2) + "\n")
    counts.update(rows=len(rows), rows_correct=len(good), rows_incorrect=len(bad))
    console.print(
        f"verifier-sft: {len(unique)} distinct candidates of {len(found)}: {counts['correct']} correct, "
        f"{counts['incorrect']} incorrect; wrote {len(rows)} rows ({len(good)} / {len(bad)})"
    )
    return counts
