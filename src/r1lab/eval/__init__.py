"""Evaluation: greedy accuracy, pass@k (unbiased), maj@k, mean length, format errors, 95% Wilson intervals.

results = run_eval("runs/x/final", EvalConfig(task="addition", n=8, k=[1, 4, 8]), Path("runs/x/eval"))
"""

from r1lab.eval.metrics import maj_at_k, majority_correct, pass_at_k, wilson_interval
from r1lab.eval.runner import run_eval, summarize, write_results
from r1lab.eval.tables import results_markdown, results_table

__all__ = [
    "maj_at_k",
    "majority_correct",
    "pass_at_k",
    "results_markdown",
    "results_table",
    "run_eval",
    "summarize",
    "wilson_interval",
    "write_results",
]
