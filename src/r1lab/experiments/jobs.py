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
    node_config,
    stage_entry,
    train_node,
    write_json,
)
from r1lab.experiments.plan import Plan


class Processes:
    """Each job a local `python -m r1lab.experiments.jobs REQUEST` process, its output in job.log."""

    def __init__(self, slots: int) -> None:
        self.slots = slots

    def start(self, request: dict[str, Any], folder: Path) -> subprocess.Popen:
        log = (folder / "job.log").open("a")
        return subprocess.Popen(
            [sys.executable, "-m", "r1lab.experiments.jobs", str(folder / "request.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def poll(self, handle: subprocess.Popen) -> str | None:
        """None while running; "" when it succeeded; else why it failed."""
        code = handle.poll()
        return None if code is None else "" if code == 0 else f"exit status {code}"

    def stop(self, handle: subprocess.Popen) -> None:
        handle.terminate()


def run_jobs(plan: Plan, names: dict[str, str], executor: Any) -> None:
    """Run every unfinished node and evaluation of `plan` through `executor` (at most executor.slots at a time),
    each once its input exists."""
    nodes = [k for k, n in plan.nodes.items() if not finished(n)]
    evals = {}
    for run in plan.runs:
        if not (run.eval_dir / "results.json").is_file():
            evals.setdefault(run.eval_dir, run)
    running: dict[Any, tuple[str, Path]] = {}

    def launch(request: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "request.json", request)
        what = f"{request['what']} {request['name']}"
        console.print(f"[cyan]started[/cyan] {what} (log: {folder / 'job.log'})")
        running[executor.start(request, folder)] = (what, folder)

    try:
        while nodes or evals or running:
            for key in list(nodes):
                node = plan.nodes[key]
                if len(running) < executor.slots and all(finished(plan.nodes[k]) for k in node.needs):
                    nodes.remove(key)
                    # a merge's unset keys stay unset: its checks refuse a weight a method does not read
                    config = node_config(plan, node).model_dump(mode="json", exclude_unset=node.is_merge)
                    request = {"what": "stage", "name": names[key], "config": config}
                    launch({**request, "entry": stage_entry(plan, node)}, node.dir)
            for folder, run in list(evals.items()):
                if len(running) < executor.slots and (not run.chain or finished(plan.nodes[run.chain[-1]])):
                    del evals[folder]
                    request = {"what": "eval", "name": eval_title(run, names), "folder": str(folder)}
                    config = plan.evaluation.model_dump(mode="json")
                    launch({**request, "model": model_of(plan, run.chain), "config": config}, folder)
            if not running and (nodes or evals):
                raise UserError(f"{len(nodes) + len(evals)} jobs wait on inputs that no job will make")
            _reap(running, executor)
    finally:
        for handle in running:  # interrupted: stop the jobs; their stages resume on the next run
            executor.stop(handle)


def _reap(running: dict[Any, tuple[str, Path]], executor: Any) -> None:
    """Wait until a job ends; a failed job stops the experiment with its log's tail."""
    while running:
        for handle, (what, folder) in list(running.items()):
            failure = executor.poll(handle)
            if failure is None:
                continue
            del running[handle]
            if failure:
                log = folder / "job.log"
                tail = "\n".join(log.read_text().splitlines()[-15:]) if log.is_file() else ""
                raise UserError(
                    f"{what} failed ({failure}):\n{tail}".rstrip(),
                    where=str(log),
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
