"""The `r1lab` command line. Heavy imports happen inside commands so `r1lab --help` stays instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from r1lab.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Post-training recipes: SFT, then RL.")
models_app = typer.Typer(no_args_is_help=True, help="Pull, list and inspect models.")
data_app = typer.Typer(no_args_is_help=True, help="Make built-in task data.")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
console = Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(help="dotted key=value overrides, e.g. optim.lr=1e-5")]
RecipeOverrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="dotted key=value overrides of the recipe's own keys (not inside stages), e.g. task.train_size=500"
    ),
]
Resume = Annotated[bool, typer.Option("--resume", help="continue from the newest complete checkpoint")]
Jobs = Annotated[
    int,
    typer.Option(
        "--jobs",
        min=1,
        help="an experiment's independent stages and evaluations as up to N local processes "
        "(with --ray: up to N Ray tasks at once)",
    ),
]
Ray = Annotated[
    bool,
    typer.Option(  # \\[ escapes rich markup: a bare [ray] would not be shown
        "--ray", help="an experiment's stages and evaluations as Ray tasks (pip install 'r1lab\\[ray]')"
    ),
]


def _stage_config(kind: str, config: Path, overrides: list[str] | None, resume: bool):
    from r1lab.config import STAGE_KINDS, apply_overrides, load_yaml, validate

    data = apply_overrides(load_yaml(config), (overrides or []) + (["train.resume=true"] if resume else []))
    data.setdefault("kind", kind)
    if data["kind"] != kind:
        raise UserError(
            f"this config is for a {data['kind']!r} stage",
            where=str(config),
            fix=f"use `r1lab {str(data['kind']).replace('_', '-')}`",  # reward_model: r1lab reward-model
        )
    return validate(STAGE_KINDS[kind], data, config)


def _done(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once, not once per torchrun process
        console.print(f"[green]done[/green]: {message}")


@app.command()
def sft(config: Path, overrides: Overrides = None, resume: Resume = False) -> None:
    """Supervised fine-tuning (full or LoRA) from a YAML config."""
    from r1lab.stages.sft import run_sft

    out = run_sft(_stage_config("sft", config, overrides, resume))
    _done(f"model in {out}")


@app.command()
def rl(config: Path, overrides: Overrides = None, resume: Resume = False) -> None:
    """Reinforcement learning with verifiable rewards (GRPO family) from a YAML config."""
    from r1lab.stages.rl import run_rl

    out = run_rl(_stage_config("rl", config, overrides, resume))
    _done(f"model in {out}")


@app.command()
def dpo(config: Path, overrides: Overrides = None, resume: Resume = False) -> None:
    """Preference optimisation (DPO, IPO, SimPO, ORPO...) on chosen/rejected pairs from a YAML config."""
    from r1lab.stages.dpo import run_dpo

    out = run_dpo(_stage_config("dpo", config, overrides, resume))
    _done(f"model in {out}")


@app.command("reward-model")
def reward_model(config: Path, overrides: Overrides = None, resume: Resume = False) -> None:
    """Outcome reward model: a scalar head trained on labelled completions (bce) or pairs (bradley_terry)."""
    from r1lab.stages.reward_model import run_reward_model

    out = run_reward_model(_stage_config("reward_model", config, overrides, resume))
    _done(f"reward model in {out}")


@app.command()
def merge(
    config: Annotated[Path, typer.Argument(help="a mergekit-style YAML: merge_method, base_model, models")],
    output: Annotated[Path, typer.Argument(help="the folder to write the merged model into")],
    overrides: Overrides = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUTPUT if it exists")] = False,
) -> None:
    """Merge models: (greedy) soups, task arithmetic, transfer, LiNeS, TIES, DARE, SLERP, WiSE-FT."""
    from r1lab.stages.merge import merge_from_file

    out = merge_from_file(config, output, overrides, overwrite)
    _done(f"model in {out}")


@app.command("run")
def run_recipe_cmd(
    recipe: Path,
    overrides: RecipeOverrides = None,
    from_stage: Annotated[
        str | None, typer.Option("--from", help="rerun from this stage on (a recipe without `experiment:`)")
    ] = None,
    jobs: Jobs = 1,
    ray: Ray = False,
) -> None:
    """Run a multi-stage recipe (e.g. SFT then RL), skipping finished stages; with an `eval:` section it evaluates
    the base model and every stage. A recipe with an `experiment:` section runs its arms and seeds instead
    (shared stages once) and writes report.html."""
    from r1lab.experiments.engine import run_recipe_file

    root = run_recipe_file(recipe, overrides, from_stage, jobs, ray)
    console.print(f"[green]done[/green]: results in {root}")


@app.command()
def compare(recipe: Path, overrides: RecipeOverrides = None, jobs: Jobs = 1, ray: Ray = False) -> None:
    """Run base vs SFT-only vs RL-only vs SFT→RL from an SFT→RL recipe; write results.md and report.html."""
    from r1lab.experiments.compare import compare as run_compare

    root = run_compare(recipe, overrides, jobs, ray)
    console.print(f"[green]done[/green]: {root / 'results.md'} and {root / 'report.html'}")


@app.command()
def doctor(
    config: Annotated[Path, typer.Argument(help="a stage config (kind sft or rl) or a recipe")],
    overrides: Overrides = None,
) -> None:
    """Check a config on its real model and data before training: template masks, data lengths, rewards, sampler
    vs trainer log-probs, gradient accumulation, step cost, eval/train overlap; exit 1 when a check fails."""
    from r1lab.doctor import render, run_doctor

    results = run_doctor(config, overrides)
    print(render(results))
    if any(c.failed for _, checks in results for c in checks):
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="an experiment's run folder, e.g. runs/quickstart")],
    baseline: Annotated[
        str | None, typer.Option(help="compare every arm with this arm instead of the experiment's baseline")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="write the report here instead of into RUN_DIR (e.g. with --baseline)")
    ] = None,
) -> None:
    """Re-render results.md, plots/ and report.html of an experiment from its run folder (nothing re-runs)."""
    from r1lab.experiments.report import write_experiment_report

    if not run_dir.is_dir():
        raise UserError(
            f"no run folder {str(run_dir)!r}", fix="give the folder `r1lab compare` or `r1lab run` wrote"
        )
    results = write_experiment_report(run_dir, baseline, out)
    print(results.read_text())
    console.print(f"[green]done[/green]: {results} and {results.parent / 'report.html'}")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="a named default model (see `r1lab models list`)")] = (
        "smollm2-135m-instruct"
    ),
    force: Annotated[bool, typer.Option("--force", help="fetch and convert again even if cached")] = False,
) -> None:
    """Fetch a named default model into the cache ($R1LAB_HOME) as a safetensors HF folder."""
    from r1lab.models import pull

    console.print(f"{name}: {pull(name, force=force)}")


@models_app.command("list")
def models_list() -> None:
    """List the named default models and whether each is cached."""
    from rich.table import Table

    from r1lab.models import list_models

    table = Table("name", "cached", "source")
    for row in list_models():
        table.add_row(row["name"], "yes" if row["cached"] else "no", row["source"])
    Console().print(table)


@models_app.command("compose")
def models_compose(
    llm: Annotated[str, typer.Option("--llm", help="language model: named default, HF folder or hub id")],
    vision: Annotated[str, typer.Option("--vision", help="vision tower preset: small-vit or tiny-vit")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the composed model to")],
) -> None:
    """Build a LLaVA-class VLM: a random SigLIP tower + projector and the LLM's weights, as a plain HF folder."""
    from r1lab.models.compose import compose_vlm

    console.print(f"composed {llm} + {vision}: {compose_vlm(llm, vision, out)}")


@models_app.command("info")
def models_info(model: str) -> None:
    """Show a model's architecture, size, dtype, special tokens and whether it has a chat template (name, folder,
    .gguf or hub id)."""
    from r1lab.models import model_info

    for key, value in model_info(model).items():
        Console().print(f"[bold]{key}[/bold]: {value}")


def _task_options(option: list[str] | None) -> dict:
    """--option key=value items as task knobs (values read as YAML: 4 is an int)."""
    import yaml

    options = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {item!r} is not key=value", fix="e.g. --option digits=4")
        options[key.strip()] = yaml.safe_load(value)
    return options


@data_app.command("make")
def data_make(
    task: str,
    n: Annotated[int, typer.Option("--n", help="number of problems")] = 1000,
    split: Annotated[str, typer.Option(help="train or test (their problems never overlap)")] = "train",
    out: Annotated[
        Path | None, typer.Option(help="JSONL file to write; default <task>-<split>.jsonl")
    ] = None,
    seed: int = 0,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="a task knob as key=value, e.g. -o digits=4")
    ] = None,
) -> None:
    """Write a built-in task's problems (prompt, answer, step-by-step completion) as JSONL to see and edit."""
    from r1lab.tasks import get_task
    from r1lab.tasks.visual import write_task_file

    records = get_task(task).generate(n, seed=seed, split=split, **_task_options(option))
    path = out or Path(f"{task}-{split}.jsonl")
    write_task_file(path, records)  # a visual task's images go to images/ beside the file
    console.print(f"[green]wrote[/green] {len(records)} {task} problems ({split}) to {path}")


@data_app.command("pairs")
def data_pairs(
    model: Annotated[str, typer.Argument(help="the model to sample from (named default, folder, hub id)")],
    out: Annotated[Path, typer.Option(help="where to write the pairs (JSONL, DPO data)")],
    task: Annotated[str | None, typer.Option(help="a built-in task: its prompts and its reward")] = None,
    data: Annotated[str | None, typer.Option(help="a prompt file (with --reward) instead of --task")] = None,
    reward: Annotated[list[str] | None, typer.Option("--reward", "-r", help="reward (repeatable)")] = None,
    n: Annotated[int, typer.Option("--n", help="completions sampled per prompt")] = 8,
    limit: Annotated[
        int | None, typer.Option(help="prompts to use (a task: how many to generate, 500)")
    ] = None,
    split: str = "train",
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: Annotated[int, typer.Option(help="prompts per generate call")] = 16,
    seed: int = 0,
    pairs_per_prompt: Annotated[int, typer.Option(help="most (correct, incorrect) pairs per prompt")] = 1,
    engine: Annotated[str, typer.Option(help="generation engine: hf (r1lab's own), vllm or auto")] = "hf",
    per_step: Annotated[
        bool, typer.Option(help="cut each rejected sample after the step where its success rate collapses")
    ] = False,
    mc: Annotated[int, typer.Option("--mc", help="--per-step: continuations per step prefix (M)")] = 8,
    step_sep: Annotated[str, typer.Option(help="--per-step: the text ending a step (\\n, \\t read)")] = "\\n",
    collapse_drop: Annotated[
        float, typer.Option(help="--per-step: a fall in success rate this large collapses (>1: only to 0)")
    ] = 0.5,
) -> None:
    """Sample N completions per prompt, score them with the reward, write (correct, incorrect) pairs; with
    --per-step the incorrect side is cut at the step where M continuations from it stop succeeding."""
    from r1lab.stages.dpo_pairs import PairSampling, make_pairs
    from r1lab.stages.dpo_steps import StepOptions

    sep = step_sep.replace("\\n", "\n").replace("\\t", "\t")
    steps = StepOptions(mc, sep, collapse_drop) if per_step else None
    sampling = PairSampling(
        n, temperature, 1.0, max_new_tokens, batch_size, seed, pairs_per_prompt, engine, steps
    )
    counts = make_pairs(
        model, out, data=data, task=task, rewards=reward, limit=limit, split=split, sampling=sampling
    )
    console.print(
        f"[green]wrote[/green] {counts['pairs']} pairs from {counts['prompts']} prompts to {out} "
        f"({counts['no_correct']} prompts had no correct sample, {counts['no_incorrect']} no incorrect one)"
    )


@data_app.command("prm-labels")
def data_prm_labels(
    model: Annotated[str, typer.Argument(help="the model to sample from (named default, folder, hub id)")],
    out: Annotated[Path, typer.Option(help="where to write the labelled steps (JSONL, PRM data)")],
    task: Annotated[str | None, typer.Option(help="a built-in task: its prompts and its reward")] = None,
    data: Annotated[str | None, typer.Option(help="a prompt file (with --reward) instead of --task")] = None,
    reward: Annotated[list[str] | None, typer.Option("--reward", "-r", help="reward (repeatable)")] = None,
    n: Annotated[int, typer.Option("--n", help="completions sampled per prompt")] = 4,
    mc: Annotated[int, typer.Option("--mc", help="continuations per step prefix (M)")] = 8,
    step_sep: Annotated[str, typer.Option(help="the text ending a step (\\n, \\t read)")] = "\\n",
    limit: Annotated[int | None, typer.Option(help="prompts to use (a task: how many, 500)")] = None,
    split: str = "train",
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: Annotated[int, typer.Option(help="prompts per generate call")] = 16,
    seed: int = 0,
    engine: Annotated[str, typer.Option(help="generation engine: hf (r1lab's own), vllm or auto")] = "hf",
) -> None:
    """Process reward model data: sample N completions per prompt and label each step good (1) when one of M
    continuations from it reaches a correct answer (Math-Shepherd); rows {prompt, steps, labels, values}."""
    from r1lab.stages.prm_labels import LabelOptions, make_prm_labels

    sep = step_sep.replace("\\n", "\n").replace("\\t", "\t")
    opts = LabelOptions(n, mc, sep, temperature, max_new_tokens, batch_size, seed, engine)
    counts = make_prm_labels(
        model, out, task=task, data=data, rewards=reward, limit=limit, split=split, opts=opts
    )
    console.print(
        f"[green]wrote[/green] {counts['rows']} samples ({counts['steps']} steps, {counts['good_steps']} good) "
        f"from {counts['prompts']} prompts to {out} ({counts['single_step']} with a single step)"
    )


@data_app.command("tasks")
def data_tasks() -> None:
    """List the built-in tasks, their default reward and their knobs."""
    from rich.table import Table

    from r1lab.tasks import TASKS, get_task

    table = Table("task", "reward", "options (defaults)", "what")
    for name in TASKS:
        task = get_task(name)
        knobs = ", ".join(f"{k}={v}" for k, v in task.defaults.items())
        table.add_row(name, task.reward, knobs, task.description)
    Console().print(table)


@data_app.command("select")
def data_select(
    pool: Annotated[str, typer.Argument(help="the pool: a .jsonl/.json/.parquet/.csv file or folder")],
    method: Annotated[str, typer.Option(help="random | fit | pass_rate | diversity | curation | indicators")],
    k: Annotated[int, typer.Option("--k", min=1, help="records to keep")],
    out: Annotated[Path, typer.Option(help="where to write the kept records (JSONL, pool order)")],
    model: Annotated[str | None, typer.Option(help="the target model (every method but random)")] = None,
    task: Annotated[
        str | None, typer.Option(help="verify (samples or given responses) with its reward")
    ] = None,
    reward: Annotated[
        list[str] | None, typer.Option("--reward", "-r", help="pass_rate: reward (repeatable)")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="pass_rate: samples per prompt")] = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    probe: Annotated[
        str | None, typer.Option(help="indicators: held-out SFT file to fit the rule to")
    ] = None,
    probe_size: Annotated[int, typer.Option(help="indicators: pool records probed with one SGD step")] = 32,
    probe_lr: Annotated[float, typer.Option(help="indicators: that step's learning rate")] = 1e-3,
    neighbours: Annotated[int, typer.Option(help="indicators: k of the kNN-distance indicator")] = 5,
) -> None:
    """Select K records of a pool: random (seeded baseline), fit (per instruction the response the model finds
    likeliest), pass_rate (drop prompts the model always or never solves; pass rates go into the file),
    diversity (k-means on the model's mean hidden states, evenly across clusters), curation (drop responses the
    verifier fails, then the model's least confident), indicators (InstructMining: a linear rule on length,
    perplexity, kNN distance and reward, fitted to the one-step loss change on --probe)."""
    import r1lab.stages.select  # noqa: F401  (registers the model-based selectors)
    from r1lab.data.select import SelectOptions, select_file

    options = SelectOptions(k=k, source=pool, seed=seed, model=model, task=task, rewards=reward or [], n=n,
                            temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            probe=probe, probe_size=probe_size, probe_lr=probe_lr, neighbours=neighbours)  # fmt: skip
    summary = select_file(pool, method, options, out)
    console.print(f"[green]wrote[/green] {summary['kept']} of {summary['pool']} records ({method}) to {out}")


@data_app.command("noisy-pool")
def data_noisy_pool(
    task: Annotated[str, typer.Option(help="a built-in task with a verifier, e.g. countdown")],
    out: Annotated[Path, typer.Option(help="the SFT pool to write (JSONL, each row with an id)")],
    labels: Annotated[Path, typer.Option(help="the noise labels (id, noise kind), kept aside")],
    size: Annotated[int, typer.Option(min=1, help="rows in the pool")] = 1000,
    wrong: Annotated[float, typer.Option(help="share with a wrong answer the verifier fails")] = 0.2,
    truncated: Annotated[float, typer.Option(help="share cut before the answer line")] = 0.1,
    near_duplicates: Annotated[float, typer.Option(help="share that copies another clean row lightly")] = 0.1,
    off_format: Annotated[float, typer.Option(help="share with the right answer off the Answer: line")] = 0.1,
    seed: int = 0,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="a task knob as key=value, e.g. -o count=4")
    ] = None,
) -> None:
    """A pool where selection can matter: the task's written solutions with a controlled share of wrong,
    truncated, near-duplicate and off-format rows; the labels go to a separate file for select-report."""
    from r1lab.stages.noisy_pool import build_noisy_pool

    shares = dict(wrong=wrong, truncated=truncated, near_duplicate=near_duplicates, off_format=off_format)
    summary = build_noisy_pool(task, size, shares, out, labels, seed=seed, options=_task_options(option))
    counts = ", ".join(f"{n} {kind}" for kind, n in summary["counts"].items())
    console.print(f"[green]wrote[/green] {size} {task} rows ({counts}) to {out}, their labels to {labels}")


@data_app.command("select-report")
def data_select_report(
    selections: Annotated[list[str], typer.Argument(help="files written by r1lab data select from the pool")],
    labels: Annotated[str, typer.Option(help="the labels file of r1lab data noisy-pool")],
    out: Annotated[Path | None, typer.Option(help="also write the rows as JSON here")] = None,
) -> None:
    """Each selection's precision and recall at excluding the pool's noise (overall and per kind)."""
    import json

    from rich.table import Table

    from r1lab.data.select_report import noise_report

    rows = noise_report(labels, selections)
    kinds = sorted({k for row in rows for k in row["recall_by_kind"]})
    table = Table("selection", "kept", "excluded", "precision", "recall", *(f"recall {k}" for k in kinds))
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for row in rows:
        by_kind = [fmt(row["recall_by_kind"].get(k)) for k in kinds]
        table.add_row(row["selection"], str(row["kept"]), str(row["excluded"]),
                      fmt(row["precision"]), fmt(row["recall"]), *by_kind)  # fmt: skip
    Console().print(table)
    if out:
        out.write_text(json.dumps(rows, indent=2) + "\n")


@data_app.command("metis")
def data_metis(
    rl_stage: Annotated[Path, typer.Argument(help="an RL stage folder (it holds prompt_stats.jsonl)")],
    out: Annotated[Path, typer.Option(help="where to write the SFT records (JSONL)")],
    teacher: Annotated[
        str | None, typer.Option(help="acc = 0 prompts: its verified samples before the written solutions")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="teacher samples per prompt (and its greedy one)")] = 8,
    temperature: float = 0.7,
    max_new_tokens: int = 256,
    batch_size: int = 8,
) -> None:
    """Metis-RISE's targeted SFT data from an RL stage's per-prompt accuracy: the recorded verified-correct
    self-sample of each prompt with 0 < acc < 1, the written (or --teacher's verified) solution of each prompt
    with acc = 0."""
    from r1lab.stages.metis import Teacher, build_metis_data

    taught = Teacher(teacher, k, temperature, max_new_tokens, batch_size) if teacher else None
    counts = build_metis_data(rl_stage, out, taught)
    kept = counts["self"] + counts["teacher"] + counts["written"]
    console.print(f"[green]wrote[/green] {kept} records to {out}")


@data_app.command("distill")
def data_distill(
    model: Annotated[str, typer.Argument(help="the model to sample from (the policy itself or a teacher)")],
    out: Annotated[Path, typer.Option(help="where to write the SFT records (JSONL)")],
    task: Annotated[str | None, typer.Option(help="a built-in task: prompts and reward")] = None,
    data: Annotated[str | None, typer.Option(help="or a prompt file (the columns its reward needs)")] = None,
    reward: Annotated[list[str] | None, typer.Option("--reward", "-r", help="reward (repeatable)")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="problems generated for --task")] = 200,
    k: Annotated[int, typer.Option("--k", min=2, help="samples per prompt")] = 8,
    m: Annotated[int, typer.Option("--m", min=1, help="kept per prompt at most")] = 1,
    split: str = "train",
    seed: int = 0,
    temperature: float = 0.7,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    engine: Annotated[str, typer.Option(help="generation engine: hf (r1lab's own), vllm or auto")] = "hf",
) -> None:
    """Self-sampled SFT data: k samples per prompt, keep the verified-correct ones (deduplicated, at most m per
    prompt) with their provenance; stops with an error when nothing verifies."""
    from r1lab.stages.distill import DistillOptions, distill

    opts = DistillOptions(model=model, out=out, task=task, data=data, rewards=reward or [], n=n, split=split,
                          seed=seed, k=k, m=m, temperature=temperature, max_new_tokens=max_new_tokens,
                          batch_size=batch_size, engine=engine)  # fmt: skip
    counts = distill(opts)
    kept = f"{counts['kept']} records ({counts['prompts_kept']} prompts)"
    console.print(f"[green]wrote[/green] {kept} to {out}")


@data_app.command("verifier-sft")
def data_verifier_sft(
    out: Annotated[Path, typer.Option(help="where to write the judge rows (JSONL: SFT data, RL prompts)")],
    model: Annotated[str | None, typer.Argument(help="the model to sample candidates from")] = None,
    samples: Annotated[
        str | None, typer.Option("--from", help="label this samples file instead of sampling")
    ] = None,
    task: Annotated[str | None, typer.Option(help="a built-in task: prompts and verifier")] = None,
    data: Annotated[str | None, typer.Option(help="or a prompt file (the columns its reward needs)")] = None,
    reward: Annotated[list[str] | None, typer.Option("--reward", "-r", help="verifier (repeatable)")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="samples per prompt (plus the greedy one)")] = 4,
    limit: Annotated[int, typer.Option(min=1, help="problems generated for --task")] = 200,
    balance: Annotated[bool, typer.Option(help="as many incorrect as correct rows (seeded draw)")] = False,
    split: str = "train",
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    engine: Annotated[str, typer.Option(help="generation engine: hf (r1lab's own), vllm or auto")] = "hf",
) -> None:
    """Generative-verifier data: candidates (sampled from MODEL or read with --from) labelled by the verifier,
    written as judge prompt -> short judgement + "Verdict: correct|incorrect" rows with a `label` column."""
    from r1lab.stages.verifier_data import VerifierDataOptions, make_verifier_data

    opts = VerifierDataOptions(out=out, model=model, samples=samples, task=task, data=data, rewards=reward or [],
                               limit=limit, split=split, seed=seed, n=n, temperature=temperature,
                               max_new_tokens=max_new_tokens, batch_size=batch_size, engine=engine,
                               balance=balance)  # fmt: skip
    counts = make_verifier_data(opts)
    console.print(
        f"[green]wrote[/green] {counts['rows']} judge rows ({counts['rows_correct']} correct, "
        f"{counts['rows_incorrect']} incorrect) to {out}"
    )


@data_app.command("check")
def data_check(
    train: Annotated[str, typer.Argument(help="training data: a file, folder or hub dataset")],
    test: Annotated[str, typer.Argument(help="held-out data (its `test` split for a folder or hub dataset)")],
    n: Annotated[int, typer.Option("--n", min=1, help="words per n-gram for near duplicates")] = 8,
    threshold: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="near duplicate: this fraction of its n-grams in training"),
    ] = 0.8,
    max_gram_prompts: Annotated[
        int,
        typer.Option(min=1, help="an n-gram in more training prompts than this is template text, ignored"),
    ] = 10,
    fail_above: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="exit 1 when more than this fraction of test prompts match"),
    ] = 0.0,
    columns: Annotated[
        list[str] | None, typer.Option(help="map a column as NAME=COLUMN (repeatable), e.g. prompt=question")
    ] = None,
    examples: Annotated[int, typer.Option(min=0, help="matches of each kind to print")] = 3,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the full report as JSON")
    ] = None,
) -> None:
    """Contamination check: test prompts that are exact (normalised) or near (n-gram) duplicates of training ones."""
    from r1lab.data.contamination import check_contamination, report_text, write_report_json
    from r1lab.eval.runner import parse_columns

    columns_map = parse_columns(columns or [])
    report = check_contamination(train, test, n=n, threshold=threshold, max_gram_prompts=max_gram_prompts,
                                 columns=columns_map)  # fmt: skip
    print(report_text(report, examples))
    if json_out:
        write_report_json(report, json_out)
    if report.fraction > fail_above:
        console.print(
            f"[red]contaminated[/red]: {report.fraction:.1%} of test prompts > --fail-above {fail_above}"
        )
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    model: str,
    task: Annotated[
        str | None,
        typer.Option(help="built-in task: its generated problems of --split, scored by its reward"),
    ] = None,
    data: Annotated[str | None, typer.Option(help="eval set: a file, folder or hub dataset")] = None,
    reward: Annotated[
        list[str] | None, typer.Option("--reward", "-r", help="reward name (repeatable)")
    ] = None,
    n: Annotated[int, typer.Option(help="samples per problem for pass@k / maj@k and --select")] = 1,
    k: Annotated[
        list[int] | None, typer.Option(help="k for pass@k and maj@k (repeatable); default 1 and n")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="evaluate the first N problems")] = None,
    split: str = "test",
    temperature: float = 0.7,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    out: Annotated[Path | None, typer.Option(help="results folder; default runs/eval/<model>-<set>")] = None,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            help="map a column as NAME=COLUMN, as data.columns does (repeatable), e.g. --columns prompt=question"
        ),
    ] = None,
    engine: Annotated[str, typer.Option(help="generation engine: hf (r1lab's own), vllm or auto")] = "hf",
    backend: Annotated[
        str, typer.Option(help="r1lab, or lm_eval: EleutherAI's lm-eval on the same prompts (greedy)")
    ] = "r1lab",
    select: Annotated[
        list[str] | None,
        typer.Option(
            help="test-time selection over the --n samples (repeatable): majority, best_of_n:ORM_FOLDER, "
            "weighted_majority:ORM_FOLDER; accuracy vs n goes to results.md and scaling.png"
        ),
    ] = None,
    n_curve: Annotated[
        str | None, typer.Option(help="n values of the --select curves, each <= --n, e.g. 1,4,16")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="beam: PRM-guided step-level beam search (needs --prm); to results.md")
    ] = None,
    prm: Annotated[str | None, typer.Option(help="process reward model folder guiding --search")] = None,
    beam_width: Annotated[
        int | None, typer.Option(help="--search: beams kept per problem (default 4)")
    ] = None,
    steps_per_expand: Annotated[
        int | None, typer.Option(help="--search: steps sampled per beam and round (default 4)")
    ] = None,
    beam_score: Annotated[
        str | None, typer.Option(help="--search: rank by the last step's PRM score or the min (default last)")
    ] = None,
) -> None:
    """Greedy accuracy, pass@k, maj@k, mean length and format errors with 95% intervals; writes
    results.json, results.md, samples.jsonl (and reward_errors.jsonl when a reward call failed)."""
    from r1lab.config import EvalConfig, validate
    from r1lab.eval import results_markdown, run_eval
    from r1lab.eval.runner import parse_columns

    raw = dict(task=task, data=data, rewards=[{"name": r} for r in reward or []], n=n, k=k or sorted({1, n}),
               limit=limit, split=split, temperature=temperature, max_new_tokens=max_new_tokens,
               batch_size=batch_size, columns=parse_columns(columns or []), engine=engine)  # fmt: skip
    cfg = validate(EvalConfig, raw, "command line")
    folder = out or Path("runs/eval") / f"{Path(model).name}-{task or Path(data or '').stem}"
    if (n_curve and not select) or (select and backend != "r1lab"):
        raise UserError(
            "--n-curve needs --select, and --select the r1lab backend",
            where="r1lab eval",
            fix="add e.g. --select majority, or drop --n-curve / --backend",
        )
    from r1lab.eval import beam_search

    beam = dict(prm=prm, width=beam_width, per_expand=steps_per_expand, score=beam_score)
    extra = beam_search.from_cli(search, beam, cfg, folder, backend)  # checked, PRM loaded, before generating
    if backend != "r1lab":
        from r1lab.eval.lm_eval_backend import run_backend

        print(run_backend(backend, model, cfg, folder))
        return
    if select:  # checked, and reward models loaded, before anything is generated
        from r1lab.eval import scaling

        selects, ns = scaling.parse_selects(select), scaling.parse_n_curve(n_curve, n)
        scorers = scaling.load_scorers(selects)
    results = run_eval(model, cfg, folder, extra=extra)
    print(results_markdown(results))
    if select:
        from r1lab.report.scaling_plot import scaling_plot

        curves = scaling.run_scaling(results, folder, selects, ns, scorers, batch_size=batch_size)
        print(scaling.scaling_markdown(curves))
        scaling_plot(curves, folder / "scaling.png")
    if "beam_search" in results:
        beam_search.append_markdown(folder, results["beam_search"])
        print(beam_search.beam_markdown(results["beam_search"]))
    console.print(f"[green]done[/green]: {folder}/results.json, results.md, samples.jsonl")


@app.command("export")
def export_cmd(
    model: Annotated[str, typer.Argument(help="a model folder (e.g. a stage's final/), LoRA adapter, name")],
    to: Annotated[str, typer.Option("--to", help="gguf (for llama.cpp) or hf (a plain folder, LoRA merged)")],
    quant: Annotated[str, typer.Option(help="GGUF type: f16, q8_0, q4_k_m (llama-cpp-python), f32")] = "f16",
    out: Annotated[Path | None, typer.Option(help="file or folder to write; default next to here")] = None,
) -> None:
    """Export a model as GGUF through llama.cpp's own converter (chat template embedded) or as a plain HF folder
    with a model card (the recipe and results when the model is inside an r1lab run folder)."""
    from r1lab.models.export import export_model

    console.print(f"[green]done[/green]: {export_model(model, to, out, quant)}")


@app.command("chat")
def chat_cmd(
    model: Annotated[str, typer.Argument(help="a model folder, name, .gguf or hub id")],
    template: Annotated[Path | None, typer.Option(help="a Jinja chat template file to use")] = None,
    system: Annotated[str | None, typer.Option(help="a system message for every turn")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    seed: int | None = None,
    show_prompt: Annotated[bool, typer.Option(help="print the templated prompt of every turn")] = False,
) -> None:
    """Chat with a model in the terminal through its chat template; /reset clears the history, /exit leaves."""
    from r1lab.chat import Sampling, chat

    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    chat(model, template=template, system=system, sampling=sampling, show_prompt=show_prompt)


@app.command("vllm-serve")
def vllm_serve_cmd(
    model: Annotated[
        str, typer.Argument(help="the trainer's model: folder, name or hub id (weights are pushed)")
    ],
    host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 for other nodes")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8100,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto")] = "auto",
    gpu_memory_utilization: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    seed: int = 0,
) -> None:
    """Serve vLLM for an RL run elsewhere (rollout.vllm_mode: server, rollout.server_address: HOST:PORT); the
    key is R1LAB_VLLM_AUTHKEY (printed when unset). Serves run after run until Ctrl-C."""
    from r1lab.models import resolve_model_path
    from r1lab.rollout.vllm_server import serve

    serve(resolve_model_path(model), host=host, port=port, dtype=dtype,
          gpu_memory_utilization=gpu_memory_utilization, seed=seed)  # fmt: skip


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress bars only
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        app()
    except UserError as e:
        # plain Text: brackets in the message are not markup; soft_wrap: never hard-wrap it at the console width
        # (a piped error must stay one greppable line per part)
        console.print(Text.assemble(("error: ", "bold red"), e.render()), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
