"""Test-time scaling for `r1lab eval --select ...`: accuracy vs n for majority vote, ORM best-of-n,
ORM-weighted majority and PRM selection (prm_min, prm_last; an ORM's place may be taken by a generative verifier
folder, its score P(correct) at the verdict token), from the n samples per problem an eval drew, with
the compute each point costs.

For each n of the curve, a method's accuracy on a problem is its expected accuracy over n-subsets of that
problem's drawn samples (drawn without replacement; the unbiased estimator, see eval/select.py); the curve point
is the mean over problems with a 95% Wilson interval over problems, as eval's pass@k / maj@k. Compute per point:
tokens generated (n × the problem's mean completion length, summed over problems: the expected count for an
n-subset) and, for the reward-model methods, tokens the model read (the templated prompt + completion, as
score() / score_steps() feed it). A PRM splits a completion into steps at its step separator
(rollout.step_values.split_steps; a completion without one is one step) and scores them in one pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.eval.metrics import wilson_interval
from r1lab.eval.select import AT_K, METHODS_NEEDING_PRM, METHODS_NEEDING_SCORES, prm_aggregate

Selection = tuple[str, str | None]  # (method, reward model path or None)
SCORES_FILE = "orm_scores.jsonl"  # per sample: each reward model's score (a PRM's: its list of step scores)
NEEDS_MODEL = METHODS_NEEDING_SCORES + METHODS_NEEDING_PRM
VERIFIER = "generative_verifier"  # a scorer kind beside orm / prm (rewards.verifier_model)


def parse_selects(items: list[str]) -> list[Selection]:
    """`majority`, `best_of_n:PATH`, `prm_min:PATH`, ... -> [(method, path)]; mistakes are UserErrors."""
    out: list[Selection] = []
    for item in items:
        name, sep, path = item.partition(":")
        if name not in AT_K:
            raise UserError(
                f"--select {item!r}: unknown selection {name!r}",
                where="r1lab eval --select",
                fix="use one of: majority, "
                + ", ".join(
                    [m + ":ORM_FOLDER" for m in METHODS_NEEDING_SCORES]
                    + [m + ":PRM_FOLDER" for m in METHODS_NEEDING_PRM]
                ),
            )
        if name in NEEDS_MODEL and not path:
            which = (
                "a process reward model (loss: prm_bce)" if name in METHODS_NEEDING_PRM else "a reward model"
            )
            raise UserError(
                f"--select {name} needs {which} to score the samples",
                where="r1lab eval --select",
                fix=f"name its folder: --select {name}:PATH (a `kind: reward_model` stage's final/)",
            )
        if name not in NEEDS_MODEL and sep:
            raise UserError(
                f"--select {item!r}: {name} takes no reward model",
                where="r1lab eval --select",
                fix=f"write --select {name}",
            )
        if (name, path or None) not in out:
            out.append((name, path or None))
    return out


def parse_n_curve(text: str | None, n: int) -> list[int]:
    """`1,4,16` -> [1, 4, 16]; each must be 1..n (the samples drawn). Default: 1, 2, 4, … up to n, and n."""
    if n < 2:
        raise UserError(
            f"--select needs several samples per problem, got --n {n}",
            where="r1lab eval --n",
            fix="draw them with e.g. --n 16 (and --temperature above 0)",
        )
    if not text:
        return sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | {n})
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(
            f"--n-curve {text!r} is not a list of integers",
            where="r1lab eval --n-curve",
            fix="e.g. --n-curve 1,4,16",
        ) from None
    bad = [v for v in values if not 1 <= v <= n]
    if bad or not values:
        raise UserError(
            f"--n-curve {text!r}: {bad or 'no value'} outside 1..{n}, the samples drawn per problem (--n {n})",
            where="r1lab eval --n-curve",
            fix=f"draw at least {max(bad, default=1)} samples (--n {max(bad, default=1)}) or drop those values",
        )
    return values


def load_scorers(selects: list[Selection]) -> dict[str, Any]:
    """path -> (model, tokenizer, meta) for each reward model named: an ORM for best_of_n / weighted_majority,
    a PRM for prm_min / prm_last (the other kind is refused by name); a folder that is not one: its loader's error."""
    kinds: dict[str, str] = {}
    for method, path in selects:
        if path is not None:
            kinds.setdefault(path, check_kind(method, path))
    if not kinds:
        return {}
    from r1lab.rewards.reward_model_io import load_reward_model

    return {
        path: load_verifier_scorer(path) if kind == VERIFIER else load_reward_model(path, kinds=(kind,))
        for path, kind in kinds.items()
    }


def load_verifier_scorer(path: str) -> tuple[Any, None, dict[str, Any]]:
    """A generative verifier as an ORM-like scorer: (its reward, no tokenizer, meta); score = P(correct)."""
    from r1lab.rewards.verifier_model import GenerativeVerifierReward

    verifier = GenerativeVerifierReward(Path(path).expanduser())
    return verifier, None, {**verifier.meta, "kind": VERIFIER}


def check_kind(method: str, path: str, flag: str | None = None) -> str:
    """The kind of reward model `method` needs (orm or prm); a UserError, naming `flag` (default `--select
    method:path`), when the folder is the other kind: its reward_model.json says so, or it is a sequence
    classifier without one (an ORM from elsewhere). Any other folder is left to the loader to describe."""
    from r1lab.rewards.reward_model_io import MARKER
    from r1lab.rewards.verifier import MARKER as VERIFIER_MARKER

    folder, flag = Path(path).expanduser(), flag or f"--select {method}:{path}"
    need = "prm" if method in METHODS_NEEDING_PRM else "orm"
    if (
        folder / VERIFIER_MARKER
    ).is_file():  # a generative verifier: one P(correct) per completion, like an ORM
        if need == "prm":
            raise UserError(
                f"{flag}: {folder} is a generative verifier (one verdict per completion), but a process reward "
                "model (one score per step) is needed",
                where=str(folder / VERIFIER_MARKER),
                fix=f"select with its verdict: --select best_of_n:{path} or --select weighted_majority:{path}",
            )
        return VERIFIER
    marker = folder / MARKER
    kind = json.loads(marker.read_text()).get("kind") if marker.is_file() else None
    config = folder / "config.json"
    if kind is None and config.is_file():
        archs = json.loads(config.read_text()).get("architectures") or [""]
        kind = "orm" if archs[0].endswith("ForSequenceClassification") else None
    if need == "prm" and kind is not None and kind != "prm":
        raise UserError(
            f"{flag}: {folder} is an outcome reward model (kind {kind}: one score per completion), but a process "
            "reward model (one score per step) is needed",
            where=str(marker if marker.is_file() else folder),
            fix="give a PRM folder (a kind: reward_model stage with loss: prm_bce), or score with this one "
            f"through --select best_of_n:{path}",
        )
    if need == "orm" and kind == "prm":
        raise UserError(
            f"{flag}: {folder} is a process reward model (kind prm: one score per step), but {method} needs an "
            "outcome reward model (one score per completion)",
            where=str(marker),
            fix=f"select with its step scores: --select prm_min:{path} or --select prm_last:{path}",
        )
    return need


def prm_step_scores(
    scorer: Any, items: list[tuple[str, str]], batch_size: int = 16
) -> list[tuple[list[float], int]]:
    """A PRM's (model, tokenizer, meta) scores of each step of every (prompt, text) (split at its separator; no
    separator: one step), batched, and the tokens it read for each; a separator the tokenizer merges with the
    next step is a UserError naming the completion."""
    from r1lab.rewards.reward_model_io import score_steps_batch
    from r1lab.rollout.step_values import split_steps

    model, tokenizer, meta = scorer
    sep = meta.get("step_sep", "\n")
    split = [(prompt, split_steps(text, sep) or [text]) for prompt, text in items]
    try:
        return score_steps_batch(model, tokenizer, split, batch_size)
    except ValueError:
        for (_, text), item in zip(items, split, strict=True):  # which one: the error path only
            try:
                score_steps_batch(model, tokenizer, [item])
            except ValueError as e:
                raise UserError(
                    f"the PRM cannot score the completion {text[:60]!r}: {e}",
                    where=f"step_sep {sep!r} of the PRM's reward_model.json",
                    fix="train the PRM with a separator the tokenizer keeps as its own token (the default newline)",
                ) from None
        raise


def score_samples(
    sampled: list[dict], scorers: dict[str, Any], batch_size: int = 16
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Each ORM's score of every sampled (prompt, completion), and the tokens it read for each: the templated
    pair score() feeds the model, cut to its last max_length."""
    scores: dict[str, list[Any]] = {}
    tokens: dict[str, list[int]] = {}
    if not scorers:
        return scores, tokens
    from r1lab.data.reward_data import conversation, reward_ids
    from r1lab.rewards.reward_model_io import score

    prompts, completions = [r["prompt"] for r in sampled], [r["completion"] for r in sampled]
    for path, (model, tokenizer, meta) in scorers.items():
        if meta.get("kind") == VERIFIER:  # P(correct) at the verdict; tokens: the prefix it reads
            model.batch_size = batch_size
            scores[path] = model(completions, prompts=prompts)
            tokens[path] = [len(model.split(p, c)[0]) for p, c in zip(prompts, completions, strict=True)]
            continue
        if meta.get("kind") == "prm":  # per sample its list of step scores
            pairs = prm_step_scores(scorers[path], list(zip(prompts, completions, strict=True)), batch_size)
            scores[path], tokens[path] = [s for s, _ in pairs], [t for _, t in pairs]
            continue
        scores[path] = [
            float(s) for s in score(model, tokenizer, prompts, completions, batch_size=batch_size)
        ]
        keep = meta.get("max_length") or 1 << 62
        tokens[path] = [
            min(len(reward_ids(tokenizer, conversation(p, c, meta.get("system_prompt")))), keep)
            for p, c in zip(prompts, completions, strict=True)
        ]
    return scores, tokens


def run_scaling(
    results: dict[str, Any],
    folder: Path,
    selects: list[Selection],
    n_curve: list[int],
    scorers: dict[str, Any],
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score the eval's samples (folder/samples.jsonl) with each ORM, compute the curves, add them to
    results["scaling"] and rewrite results.json and results.md (+ orm_scores.jsonl); returns results["scaling"]."""
    from r1lab.data.jsonl import write_jsonl
    from r1lab.eval.tables import results_markdown

    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]
    sampled = [r for r in rows if r["kind"] == "sample"]
    scores, scored_tokens = score_samples(sampled, scorers, batch_size)
    scaling = scaling_curves(sampled, selects, n_curve, scores, scored_tokens)
    results["scaling"] = scaling
    (folder / SCORES_FILE).unlink(missing_ok=True)  # an earlier eval's, into the same folder
    if scores:
        write_jsonl(
            folder / SCORES_FILE,
            [
                {"problem": r["problem"], "sample": i, **{p: s[i] for p, s in scores.items()}}
                for i, r in enumerate(sampled)
            ],
        )
    files = {
        "results.json": json.dumps(results, indent=2) + "\n",
        "results.md": results_markdown(results) + "\n\n" + scaling_markdown(scaling) + "\n",
    }
    for name, text in files.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)
    return scaling


def scaling_curves(
    sampled: list[dict],
    selects: list[Selection],
    n_curve: list[int],
    scores: dict[str, list[Any]],
    scored_tokens: dict[str, list[int]],
) -> dict[str, Any]:
    """The curves from sampled rows (problem, answer, correct, length) and per-row reward model scores (an ORM's
    float, a PRM's list of step scores) / token counts."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(sampled):
        groups.setdefault(r["problem"], []).append(i)
    sizes = {len(g) for g in groups.values()}
    if not groups or min(sizes) < max(n_curve):
        raise UserError(
            f"some problems have {min(sizes, default=0)} samples, fewer than n = {max(n_curve)}",
            where="r1lab eval --n-curve",
            fix="lower --n-curve or raise --n",
        )
    problems = list(groups.values())

    def per_n_tokens(counts: list[int] | list[float], n: int) -> int:
        return round(sum(n * sum(counts[i] for i in g) / len(g) for g in problems))

    lengths = [r["length"] for r in sampled]
    curves = []
    for method, path in selects:
        label = method if path is None else f"{method}:{path}"
        points = []
        for n in n_curve:
            values = [
                AT_K[method](
                    [sampled[i]["answer"] for i in g],
                    None if path is None else [_score(method, scores[path][i]) for i in g],
                    [sampled[i]["correct"] for i in g],
                    n,
                )
                for g in problems
            ]
            acc = sum(values) / len(values)
            points.append(
                {
                    "n": n,
                    "accuracy": acc,
                    "accuracy_ci95": list(wilson_interval(acc * len(values), len(values))),
                    "tokens_generated": per_n_tokens(lengths, n),
                    "tokens_scored": 0 if path is None else per_n_tokens(scored_tokens[path], n),
                }
            )
        curves.append({"method": method, "reward_model": path, "label": label, "points": points})
    return {
        "num_problems": len(problems),
        "samples_per_problem": min(sizes),
        "estimator": "mean over n-subsets drawn without replacement (exact for best_of_n and prm_*; all subsets "
        "up to 5000, else 5000 random ones); 95% Wilson interval over problems; weighted_majority weights "
        "sigmoid(score); prm_min / prm_last rank by the lowest / last step score",
        "tokens_generated": sum(lengths),
        "tokens_scored": {p: sum(t) for p, t in scored_tokens.items()},
        "curves": curves,
    }


def _score(method: str, value: Any) -> float:
    """The one scalar per completion a method ranks by: a PRM's step scores aggregated, an ORM's score as is."""
    return prm_aggregate(value, method) if method in METHODS_NEEDING_PRM else value


def scaling_markdown(scaling: dict[str, Any]) -> str:
    """The curves as a markdown table: method, n, accuracy [95% CI], tokens generated and scored."""
    lines = [
        f"## Test-time scaling ({scaling['num_problems']} problems, {scaling['samples_per_problem']} samples each)",
        "",
        "| method | n | accuracy [95% CI] | tokens generated | tokens scored |",
        "|---|---|---|---|---|",
    ]
    for curve in scaling["curves"]:
        for p in curve["points"]:
            lo, hi = p["accuracy_ci95"]
            lines.append(
                f"| {curve['label']} | {p['n']} | {p['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | "
                f"{p['tokens_generated']} | {p['tokens_scored']} |"
            )
    lines += [
        "",
        f"Accuracy at n: {scaling['estimator']}. Tokens: expected for n samples per problem, summed.",
    ]
    return "\n".join(lines)
