"""`r1lab doctor`: check a stage config or recipe on its real model and data before training (template masks,
data lengths, rewards, sampler/trainer log-probs, gradient accumulation, step cost, eval/train overlap)."""

from r1lab.doctor.checks import Check
from r1lab.doctor.run import render, run_doctor

__all__ = ["Check", "render", "run_doctor"]
