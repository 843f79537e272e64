"""`--jobs N`: run an experiment's independent stages and evaluations as up to N local processes.

A stage starts once its input stage has finished; an evaluation once the stage it evaluates has. Each job is
one `python -m r1lab.experiments.jobs REQUEST` process that trains (or evaluates) exactly as the sequential
engine does, into the same folders, so a killed run resumes the same way; its output goes to `job.log` in the
stage's (or evaluation's) folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from r1lab.config import STAGE_KINDS, EvalConfig, validate
from r1lab.errors import UserError
from r1lab.experiments.engine import (
    console,
    eval_title,
    evaluate,
    finished,
    model_of,
    stage_entry,
    train_node,
    write_json,
)
from r1lab.experiments.plan import Plan


def run_jobs(plan: Plan, names: dict[str, str], jobs: int) -> None:
    """Run every unfinished node and evaluation of `plan`, at most `jobs` at a time, parents first."""
    nodes = [k for k, n in plan.nodes.items() if not finished(n)]
    evals = {}
    for run in plan.runs:
        if not (run.eval_dir / "results.json").is_file():
            evals.setdefault(run.eval_dir, run)
    running: dict[subprocess.Popen, tuple[str, Path]] = {}
    try:
        while nodes or evals or running:
            for key in list(nodes):
                node = plan.nodes[key]
                if len(running) < jobs and (node.parent is None or finished(plan.nodes[node.parent])):
                    nodes.remove(key)
                    request = {
                        "what": "stage",
                        "name": names[key],
                        "config": node.config.model_dump(mode="json"),
                    }
                    request["entry"] = stage_entry(plan, node)
                    running[_start(request, node.dir)] = (f"stage {names[key]}", node.dir)
            for folder, run in list(evals.items()):
                if len(running) < jobs and (not run.chain or finished(plan.nodes[run.chain[-1]])):
                    del evals[folder]
                    request = {"what": "eval", "name": eval_title(run, names), "folder": str(folder)}
                    request |= {
                        "model": model_of(plan, run.chain),
                        "config": plan.evaluation.model_dump(mode="json"),
                    }
                    running[_start(request, folder)] = (f"eval {request['name']}", folder)
            if not running and (nodes or evals):
                raise UserError(f"{len(nodes) + len(evals)} jobs wait on inputs that no job will make")
            _reap(running)
    finally:
        for proc in running:  # interrupted: stop the jobs; their stages resume on the next run
            proc.terminate()


def _start(request: dict[str, Any], folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "request.json", request)
    log = (folder / "job.log").open("a")
    console.print(f"[cyan]started[/cyan] {request['what']} {request['name']} (log: {folder / 'job.log'})")
    return subprocess.Popen(
        [sys.executable, "-m", "r1lab.experiments.jobs", str(folder / "request.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _reap(running: dict[subprocess.Popen, tuple[str, Path]]) -> None:
    """Wait until a job ends; a failed job stops the experiment with its log's tail."""
    while running:
        for proc, (what, folder) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[proc]
            if code != 0:
                tail = "\n".join((folder / "job.log").read_text().splitlines()[-15:])
                raise UserError(
                    f"{what} failed (exit status {code}):\n{tail}",
                    where=str(folder / "job.log"),
                    fix="fix the cause and run again: finished stages are kept, an interrupted one resumes",
                )
            console.print(f"[green]finished[/green] {what}")
            return
        time.sleep(0.2)


def execute(request: dict[str, Any]) -> None:
    if request["what"] == "stage":
        config = validate(STAGE_KINDS[request["config"]["kind"]], request["config"], "request.json")
        train_node(request["name"], config, request["entry"])
    else:
        config = validate(EvalConfig, request["config"], "request.json")
        evaluate(request["name"], request["model"], config, Path(request["folder"]))


if __name__ == "__main__":
    try:
        execute(json.loads(Path(sys.argv[1]).read_text()))
    except UserError as e:
        print(f"error: {e.render()}", file=sys.stderr)
        sys.exit(2)
