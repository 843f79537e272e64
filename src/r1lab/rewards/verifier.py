"""Generative verifiers: the judge template, the verdict line, the `verdict` reward and the folder marker.

A generative verifier is a causal LM trained (SFT, then RL) to judge a candidate solution: given `judge_prompt`
(the problem and the candidate) it writes `judgement` (one short line) and ends with the fixed verdict line
`Verdict: correct` or `Verdict: incorrect`. `r1lab data verifier-sft` writes such rows, labelled by the task's
verifier (r1lab.stages.verifier_data). The judgement line restates the candidate's final answer (or says it has
none): it is a function of the candidate alone, so a scorer can rebuild it exactly and read the verdict
probability after it without generating (r1lab.rewards.verifier_model).

The same rows serve RL: their `label` column is the gold of the `verdict` reward (1 when the completion's
verdict line matches the label, 0 otherwise or when it has none), the evaluator recipe's second stage.

A folder is recognised as a generative verifier by `generative_verifier.json` (MARKER). The data step writes it
beside its file (`F.verifier.json`); an SFT stage trained on such a file, or an SFT/RL stage whose input model
has the marker, copies it into its final/ (`carry_marker`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from r1lab.rewards.registry import reward
from r1lab.tasks.base import extract_answer

MARKER = "generative_verifier.json"
VERDICT_PREFIX = "Verdict:"
CORRECT, INCORRECT = "correct", "incorrect"
TEMPLATE_VERSION = 1
_VERDICT_LINE = re.compile(r"^[\s*_#>-]*verdict\s*[*_]*\s*:\s*[*_]*\s*(correct|incorrect)\b", re.I | re.M)

JUDGE_TEMPLATE = (
    "Check the candidate solution to the problem below.\n\n"
    "Problem:\n{problem}\n\n"
    "Candidate solution:\n{solution}\n\n"
    f'Write one line of judgement, then a last line "{VERDICT_PREFIX} {CORRECT}" or "{VERDICT_PREFIX} {INCORRECT}".'
)


def judge_prompt(problem: str, solution: str) -> str:
    """The user message a verifier judges (the problem's text and the candidate solution)."""
    return JUDGE_TEMPLATE.format(problem=problem.strip(), solution=solution.strip())


def judgement_line(solution: str) -> str:
    """The judgement before the verdict: the candidate's final answer restated (from the solution alone)."""
    answer = extract_answer(solution)
    if answer is None:
        return "The candidate gives no final answer line."
    return f"The candidate's final answer is {answer}."


def judgement(solution: str, correct: bool) -> str:
    """The SFT target: the judgement line, then the verdict line."""
    return f"{judgement_line(solution)}\n{verdict_line(correct)}"


def verdict_line(correct: bool) -> str:
    return f"{VERDICT_PREFIX} {CORRECT if correct else INCORRECT}"


def parse_verdict(text: str) -> bool | None:
    """The verdict of a judgement: its last `Verdict: correct|incorrect` line (case and markdown tolerated);
    None when it has none."""
    found = _VERDICT_LINE.findall(text)
    return found[-1].lower() == CORRECT if found else None


def label_value(label: Any) -> bool:
    """A `label` cell as a bool: "correct"/"incorrect", true/false or 1/0; ValueError naming anything else."""
    if isinstance(label, str) and label.strip().lower() in (CORRECT, INCORRECT):
        return label.strip().lower() == CORRECT
    if isinstance(label, bool | int | float) and label in (0, 1):
        return bool(label)
    raise ValueError(f"label {label!r} is not 'correct'/'incorrect' (or 1/0, true/false)")


def has_verdict(completion: str, **_: Any) -> bool:
    return parse_verdict(completion) is not None


@reward("verdict", columns=("label",), correctness=True, parses=has_verdict)
def verdict_reward(completion: str, *, label: Any, **_: Any) -> float:
    """1.0 when the judgement's verdict line agrees with the verifier's label, else 0.0 (none: 0.0)."""
    verdict = parse_verdict(completion)
    return float(verdict is not None and verdict == label_value(label))


# ------------------------------------------------------------------------------------------------- the marker


def marker_meta(source: str, system_prompt: str | None = None) -> dict[str, Any]:
    """What a verifier folder's marker records: how its prompts and verdicts are written."""
    return {
        "kind": "generative_verifier",
        "template": TEMPLATE_VERSION,
        "verdict_prefix": VERDICT_PREFIX,
        "verdicts": [CORRECT, INCORRECT],
        "system_prompt": system_prompt,
        "data": source,
    }


def sidecar(data_file: Path) -> Path:
    """The marker a data step writes beside its file: F.jsonl -> F.verifier.json."""
    return data_file.with_suffix(".verifier.json")


def read_marker(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def carry_marker(final: Path, *, data_path: str | None = None, model_path: str | None = None) -> bool:
    """Mark a stage's final model as a verifier when it trained on verifier data (its sidecar) or started from a
    verifier (its marker); returns whether it did. Writes into `final` and, for final/merged, final/ too."""
    meta = read_marker(Path(model_path)) if model_path else None
    side = sidecar(Path(data_path)) if data_path and Path(data_path).is_file() else None
    if meta is None and side is not None and side.is_file():
        meta = json.loads(side.read_text())
    if meta is None:
        return False
    final = Path(final)
    for folder in {final, final.parent if final.name == "merged" else final}:
        if folder.is_dir():
            (folder / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    return True
