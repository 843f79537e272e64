"""Pure tensor math for post-training, no I/O: advantage estimators, policy losses, KL estimators, log-probs.

Each family is a registry (name -> function) so a recipe picks one by name from its config:
`ADVANTAGES` (algorithm.advantage), `POLICY_LOSSES` (objectives, algorithm.policy_loss), `LOSS_AGGS`
(algorithm.loss_agg), `KL_ESTIMATORS` (algorithm.kl_estimator).
"""

from r1lab.algorithms.advantages import ADVANTAGES
from r1lab.algorithms.kl import KL_ESTIMATORS, kl_penalty
from r1lab.algorithms.linear_logprobs import linear_logprobs
from r1lab.algorithms.logprobs import entropy_from_logits, token_logprobs
from r1lab.algorithms.policy_losses import (
    LOSS_AGGS,
    POLICY_LOSSES,
    LossTotals,
    compute_policy_loss,
    mask_truncated_completions,
    sum_metrics,
)

__all__ = [
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "LOSS_AGGS",
    "POLICY_LOSSES",
    "LossTotals",
    "compute_policy_loss",
    "entropy_from_logits",
    "kl_penalty",
    "linear_logprobs",
    "mask_truncated_completions",
    "sum_metrics",
    "token_logprobs",
]
