"""Verifiable rewards: a registry of built-in functions, a loader for user functions, and a runner that scores
batches with a weighted sum while isolating failures and timeouts in a worker process.

A reward is fn(completion: str, *, prompt: str, **columns) -> float | None, where columns are the dataset row's
columns plus `completion_length` and `max_completion_length` (tokens), and the spec's kwargs. A user function
may set `fn.correctness = True` (it is the run's accuracy reward), `fn.parses = check` (check(completion, ...)
-> bool: whether it could read an answer; eval's format errors) and `fn.batched = True` (lists in and out).
"""

import importlib
import importlib.util

import r1lab.rewards.code  # noqa: F401  (registers the `code` reward: tests run in r1lab.sandbox)
from r1lab.rewards import length, math_reward, ranking, text, tool_use, translation, verifier, visual  # noqa: F401  (registers the built-in rewards)
from r1lab.rewards.loader import LoadedReward, load_reward
from r1lab.rewards.registry import REWARDS, reward
from r1lab.rewards.runner import RewardBatch, RewardRunner

# The built-in tasks' rewards (written with r1lab.tasks) register themselves on import.
if importlib.util.find_spec("r1lab.rewards.tasks") is not None:
    importlib.import_module("r1lab.rewards.tasks")
importlib.import_module("r1lab.rewards.difficulty")  # `difficulty_weighted`: scales another registered reward

__all__ = ["REWARDS", "LoadedReward", "RewardBatch", "RewardRunner", "load_reward", "reward"]
