"""The commands a user types from the README and the Makefile parse as written, and errors print readably."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from r1lab.cli import app

ROOT = Path(__file__).resolve().parents[2]


def typed_commands() -> list[list[str]]:
    """Every `r1lab ...` line of the README's code blocks and of the Makefile's recipes, as argument lists."""
    lines, fence = [], None  # fence: the language of the code block we are in, None outside one
    for line in ROOT.joinpath("README.md").read_text().splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
        elif fence in ("bash", "sh", ""):
            lines.append(line)
    lines += ROOT.joinpath("Makefile").read_text().splitlines()
    commands = []
    for line in lines:
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word.endswith("/r1lab") or word == "r1lab":
                commands.append(words[i + 1 :])
                break
    return commands


def parse(args: list[str]) -> Any:
    """Parse `args` down to the leaf command without running it (click raises UsageError on a bad line)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("r1lab", list(args))
    while hasattr(command, "resolve_command"):  # a group (typer vendors its own click)
        # a group keeps its subcommand's name apart from the rest of the line (click's protected args)
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def test_readme_and_makefile_list_the_main_commands():
    firsts = {tuple(c[:2]) for c in typed_commands()}
    assert ("models", "pull") in firsts and ("run", "recipes/quickstart.yaml") in firsts


@pytest.mark.parametrize("args", typed_commands(), ids=" ".join)
def test_every_typed_command_parses(args):
    ctx = parse(args)
    if args[:2] == ["models", "pull"]:
        assert ctx.params["name"] == args[2]  # the name is positional, as typed


def test_models_pull_takes_the_name_positionally():
    ctx = parse(["models", "pull", "some-model", "--force"])
    assert ctx.params == {"name": "some-model", "force": True}
    result = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "models", "pull", "no-such-model"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown model 'no-such-model'" in result.stderr and "smollm2-135m-instruct" in result.stderr


def test_an_unknown_task_suggests_the_closest_name(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "data", "make", "countdwn", "--out", str(tmp_path / "x.jsonl")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "did you mean 'countdown'?" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_errors_are_not_hard_wrapped_when_piped(tmp_path):
    long_name = "a-task-name-long-enough-to-pass-eighty-columns-on-its-own-" + "x" * 40
    result = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "data", "make", long_name, "--out", str(tmp_path / "x.jsonl")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    # the whole message is one line, however long: grep finds it
    assert f"error: unknown task '{long_name}'" in result.stderr.splitlines()


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    bad = tmp_path / "recipe.yaml"
    bad.write_text("name: x\nstages: [{kind: sft, name: a, optim: {lrr: 1}}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "run", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "stages[0]" in result.stderr  # not swallowed as rich markup
