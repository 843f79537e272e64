"""PRM-guided step-level beam search for `r1lab eval --search beam --prm PRM_FOLDER`.

Per problem, round 1 samples W·S first steps from the prompt (W = beam width, S = steps per expansion); every
later round samples S continuations of each live beam. A continuation runs up to and including the next step
separator (the PRM's `step_sep`, a stop string), or EOS, or the end of the beam's token budget (max_new_tokens
for the whole completion). Each candidate (beam + new step) is scored by the PRM on all its steps in one pass
and ranked by its last step's score (`score="last"`, the default) or by its lowest step score (`"min"`, as
--select prm_min). The W best candidates of a problem are kept (ties: the earlier sampled); those that ended
(EOS or budget spent) leave the search as finished beams, the others are the next round's live beams, so the
live width shrinks as beams finish. A problem's search ends when it has no live beam; its answer is its
highest-scored finished beam (ties: the first finished).

Compute: tokens generated = every sampled token of every candidate (kept or not); tokens scored = the tokens of
every PRM pass (the templated prompt + the candidate's whole text, cut to the PRM's max_length).
`search` is the bookkeeping alone, over an `Expand` and a `Score` callable; `engine_expand` and `prm_score` are
the rollout engine and PRM behind them; `beam_eval` runs it inside `run_eval` on its model, prompts and rewards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.eval.metrics import wilson_interval
from r1lab.eval.select import prm_aggregate

SAMPLES_FILE = "beam_samples.jsonl"
SCORES = ("last", "min")
FLAGS = {"prm": "--prm", "width": "--beam-width", "per_expand": "--steps-per-expand", "score": "--beam-score"}


@dataclass(frozen=True)
class BeamOptions:
    width: int = 4  # W: beams kept per problem
    per_expand: int = 4  # S: continuations sampled per live beam and round
    max_new_tokens: int = 256  # a beam's token budget, over all its steps
    score: str = "last"  # rank candidates by the last step's PRM score or the lowest

    def __post_init__(self) -> None:
        for flag, value in (("--beam-width", self.width), ("--steps-per-expand", self.per_expand)):
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}", where=f"r1lab eval {flag}")
        if self.score not in SCORES:
            raise UserError(
                f"--beam-score {self.score!r} is not one of {', '.join(SCORES)}",
                where="r1lab eval --beam-score",
                fix="last: the newest step's PRM score; min: the lowest over the beam's steps",
            )


@dataclass(frozen=True)
class Step:
    """One sampled continuation of a beam."""

    text: str  # ends with the separator unless the beam ended
    generated: int  # tokens sampled for it
    ended: bool  # EOS, or the beam's token budget spent: no further step
    kept: int | None = None  # tokens of `text` (the budget counts these); None: all generated ones


@dataclass(frozen=True)
class Beam:
    text: str = ""  # the completion so far
    score: float = 0.0  # the PRM's (last or min) score of it
    tokens: int = 0  # tokens of its steps, against the budget
    steps: int = 0


@dataclass
class SearchResult:
    best: list[Beam]  # per problem: the highest-scored finished beam
    live: list[list[int]]  # per problem: live beams at the start of each round
    tokens_generated: int = 0
    tokens_scored: int = 0
    candidates: int = 0  # PRM-scored candidates, all problems and rounds
    finished: list[list[Beam]] = field(default_factory=list)  # per problem, in finishing order


# live beams as (problem, text so far, tokens left), samples per beam -> per beam its samples
Expand = Callable[[list[tuple[int, str, int]], int], list[list[Step]]]
# candidates as (problem, whole text) -> per candidate (its step scores, tokens the PRM read)
Score = Callable[[list[tuple[int, str]]], list[tuple[list[float], int]]]


def search(num_problems: int, expand: Expand, score: Score, opts: BeamOptions) -> SearchResult:
    """Step-level beam search of every problem at once (one expand and one score call per round)."""
    live: dict[int, list[Beam]] = {p: [Beam()] for p in range(num_problems)}
    out = SearchResult(best=[], live=[[] for _ in range(num_problems)])
    out.finished = [[] for _ in range(num_problems)]
    first = True
    while live:
        for p, beams in live.items():
            out.live[p].append(len(beams))
        items = [(p, b) for p, beams in live.items() for b in beams]
        samples = expand(
            [(p, b.text, opts.max_new_tokens - b.tokens) for p, b in items],
            opts.width * opts.per_expand if first else opts.per_expand,
        )
        first = False
        candidates: list[tuple[int, Beam, bool]] = []
        for (p, beam), steps in zip(items, samples, strict=True):
            for s in steps:
                out.tokens_generated += s.generated
                kept = s.generated if s.kept is None else s.kept
                tokens = beam.tokens + kept
                ended = s.ended or kept == 0 or tokens >= opts.max_new_tokens
                candidates.append((p, Beam(beam.text + s.text, 0.0, tokens, beam.steps + 1), ended))
        scored = score([(p, b.text) for p, b, _ in candidates])
        out.candidates += len(candidates)
        ranked: dict[int, list[tuple[Beam, bool]]] = {}
        for (p, b, ended), (step_scores, read) in zip(candidates, scored, strict=True):
            out.tokens_scored += read
            value = prm_aggregate(step_scores, f"prm_{opts.score}")
            ranked.setdefault(p, []).append((Beam(b.text, value, b.tokens, b.steps), ended))
        live = {}
        for p, cands in ranked.items():
            top = sorted(cands, key=lambda c: -c[0].score)[: opts.width]  # stable: ties in sampling order
            for beam, ended in top:
                (out.finished[p] if ended else live.setdefault(p, [])).append(beam)
    out.best = [max(f, key=lambda b: b.score) for f in out.finished]  # max keeps the first of a tie
    return out


def engine_expand(
    engine: Any, tokenizer: Any, prompt_ids: list[list[int]], sep: str, sampling: Any
) -> Expand:
    """An Expand over a rollout engine: each beam's text tokenized after its problem's prompt ids, S samples
    stopped at `sep` (kept in the text) or EOS, one generate call per round with the largest budget left; a
    sample past its own beam's budget is cut to it (its decoded first tokens) and ends the beam."""
    from dataclasses import replace

    def expand(beams: list[tuple[int, str, int]], n: int) -> list[list[Step]]:
        ids = [prompt_ids[p] + tokenizer(text, add_special_tokens=False)["input_ids"] for p, text, _ in beams]
        got = engine.generate(ids, n, replace(sampling, max_new_tokens=max(b[2] for b in beams), stop=(sep,)))
        lengths = got.completion_lengths
        out: list[list[Step]] = [[] for _ in beams]
        for row, i in enumerate(got.prompt_index):
            left, text, length = beams[i][2], got.texts[row], lengths[row]
            if length > left:  # past this beam's budget: keep its first `left` tokens
                kept = tokenizer.decode(got.completion_ids[row][:left].tolist(), skip_special_tokens=True)
                out[i].append(Step(kept, length, True, left))
                continue
            step_end = got.finish_reasons[row] == "stop" and text.endswith(sep)
            out[i].append(Step(text, length, not step_end or length == left))
        return out

    return expand


def prm_score(scorer: Any, prompts: list[str], batch_size: int = 16) -> Score:
    """A Score over a loaded PRM (model, tokenizer, meta): each candidate's step scores and tokens read, batched."""
    from r1lab.eval.scaling import prm_step_scores

    return lambda items: prm_step_scores(scorer, [(prompts[p], text) for p, text in items], batch_size)


def load_prm(path: str) -> Any:
    """(model, tokenizer, meta) of the PRM folder `--prm` names; an ORM or another folder is refused by name."""
    from r1lab.eval.scaling import check_kind
    from r1lab.rewards.reward_model_io import load_reward_model

    check_kind("prm_last", path, flag=f"--prm {path}")
    return load_reward_model(path, kinds=("prm",))


def beam_eval(
    model: Any, tokenizer: Any, prompts: list, rewards: Any, *, cfg: Any, opts: BeamOptions, scorer: Any,
    prm_path: str, folder: Path | None,
) -> dict[str, Any]:  # fmt: skip
    """Beam search on every eval prompt, its answers scored by the eval's accuracy reward; the metrics under
    "beam_search" (and one row per problem in beam_samples.jsonl)."""
    from r1lab.config import RolloutConfig
    from r1lab.data.jsonl import write_jsonl
    from r1lab.rewards.extract import final_answer, normalize
    from r1lab.rollout import SamplingParams, make_engine

    rollout_cfg = RolloutConfig(
        engine=cfg.engine, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size
    )
    engine = make_engine(rollout_cfg, model, tokenizer, seed=0)
    sampling = SamplingParams(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    sep = scorer[2].get("step_sep", "\n")
    expand = engine_expand(engine, tokenizer, [p.prompt_ids for p in prompts], sep, sampling)
    result = search(
        len(prompts), expand, prm_score(scorer, [p.prompt_text for p in prompts], cfg.batch_size), opts
    )
    texts = [b.text for b in result.best]
    columns = [
        {**p.columns, "completion_length": b.tokens, "max_completion_length": cfg.max_new_tokens}
        for p, b in zip(prompts, result.best, strict=True)
    ]
    scored = rewards.score(texts, [p.prompt_text for p in prompts], columns)
    correct = [bool(v == 1.0) for v in scored.accuracy.tolist()]
    if folder is not None:
        rows = [
            {"problem": i, "prompt": p.prompt_text, "completion": b.text, "prm_score": b.score,
             "answer": normalize(final_answer(b.text)) if b.text.strip() else None, "correct": ok,
             "tokens": b.tokens, "steps": b.steps, "rounds": len(result.live[i]), "live": result.live[i]}
            for i, (p, b, ok) in enumerate(zip(prompts, result.best, correct, strict=True))
        ]  # fmt: skip
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / SAMPLES_FILE).unlink(missing_ok=True)
        write_jsonl(Path(folder) / SAMPLES_FILE, rows)
    acc = sum(correct) / len(correct) if correct else 0.0
    return {
        "beam_search": {
            "prm": prm_path, "width": opts.width, "steps_per_expand": opts.per_expand, "score": opts.score,
            "accuracy": acc, "accuracy_ci95": list(wilson_interval(acc * len(correct), len(correct))),
            "num_problems": len(prompts), "tokens_generated": result.tokens_generated,
            "tokens_scored": result.tokens_scored, "candidates_scored": result.candidates,
            "mean_rounds": sum(len(r) for r in result.live) / max(len(result.live), 1),
        }
    }  # fmt: skip


def beam_markdown(beam: dict[str, Any]) -> str:
    lo, hi = beam["accuracy_ci95"]
    return "\n".join(
        [
            f"## PRM-guided beam search ({beam['num_problems']} problems, width {beam['width']}, "
            f"{beam['steps_per_expand']} steps per expansion, {beam['score']}-step score)",
            "",
            "| PRM | accuracy [95% CI] | tokens generated | tokens scored | mean rounds |",
            "|---|---|---|---|---|",
            f"| {beam['prm']} | {beam['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | {beam['tokens_generated']} | "
            f"{beam['tokens_scored']} | {beam['mean_rounds']:.1f} |",
        ]
    )


def append_markdown(folder: Path, beam: dict[str, Any]) -> None:
    """Add the beam-search table to folder/results.md (after the scaling table, when there is one)."""
    path = Path(folder) / "results.md"
    tmp = path.with_name(".results.md.tmp")
    tmp.write_text(path.read_text().rstrip("\n") + "\n\n" + beam_markdown(beam) + "\n")
    tmp.replace(path)


def from_cli(
    search: str | None, beam: dict[str, Any], cfg: Any, folder: Path, backend: str
) -> Callable[..., dict[str, Any]] | None:
    """`eval --search beam --prm P [--beam-width W --steps-per-expand S --beam-score last|min]` checked and its
    PRM loaded (before anything is generated): run_eval's `extra`, or None without --search."""
    if search is None:
        given = [FLAGS[k] for k, v in beam.items() if v is not None]
        if given:
            raise UserError(
                f"{', '.join(given)} set without --search", where="r1lab eval", fix="add --search beam"
            )
        return None
    if search != "beam" or backend != "r1lab" or not beam["prm"]:
        raise UserError(
            f"--search {search!r} with --backend {backend} and --prm {beam['prm']}: beam search is --search beam, "
            "on the r1lab backend, guided by a process reward model",
            where="r1lab eval --search",
            fix="write --search beam --prm PRM_FOLDER (a kind: reward_model stage with loss: prm_bce)",
        )
    opts = BeamOptions(
        width=4 if beam["width"] is None else beam["width"],
        per_expand=4 if beam["per_expand"] is None else beam["per_expand"],
        max_new_tokens=cfg.max_new_tokens,
        score=beam["score"] or "last",
    )
    scorer = load_prm(beam["prm"])
    return functools.partial(
        beam_eval, cfg=cfg, opts=opts, scorer=scorer, prm_path=beam["prm"], folder=folder
    )
