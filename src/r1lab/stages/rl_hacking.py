"""The reward-hacking monitor of an RL stage with a learned reward (`model:PATH`, r1lab.rewards.learned).

Each step it compares the learned reward with a verifier on the same samples (every completion generated that
step) and logs, to metrics.jsonl:
  hacking/learned_mean, hacking/verifier_mean  means over the samples both scored
  hacking/gap                                  learned_mean - verifier_mean (raw values: meaningful when the
                                               reward model scores on the verifier's scale, e.g. P(correct))
  hacking/corr                                 Pearson correlation of the two over those samples (NaN when
                                               either is constant or fewer than 2 samples)
  hacking/steps_over                           consecutive steps with gap > max_gap so far
The verifier is `reward_hacking.verifier` (a reward of the stage, or one added with weight 0 only to be
scored: `monitored_specs`), else the stage's accuracy reward when it is a verifiable one. With
`reward_hacking.max_gap`, a gap above it for `patience` steps in a row warns (action: warn, printed each such
step) or stops the run (action: stop): a checkpoint is written and the run ends with a UserError saying why.
The check reads the gathered step (identical on every rank), so all ranks stop at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1lab.config import RewardHackingConfig, RewardSpec, RLConfig
from r1lab.errors import UserError
from r1lab.rewards.learned import is_learned
from r1lab.rewards.loader import load_reward
from r1lab.stages.rl_batch import Scored


def _names(spec: RewardSpec) -> set[str]:
    """What a verifier name may say for this spec: its name, or a user function's function name."""
    name = spec.name.strip()
    return {name, name.rsplit(":", 1)[-1]}


def monitored_specs(cfg: RLConfig) -> list[RewardSpec]:
    """The stage's rewards, plus the monitor's verifier with weight 0 when it is not one of them (scored for
    the comparison, and as the run's accuracy, but no part of the training reward)."""
    specs = list(cfg.rewards)
    hacking = cfg.reward_hacking
    if hacking is not None and not any(hacking.verifier.strip() in _names(s) for s in specs):
        extra = RewardSpec(name=hacking.verifier.strip(), weight=0.0)
        try:  # a name that is no reward: say it is the monitor's key, not one of `rewards`
            load_reward(extra)
        except UserError as e:
            raise UserError(
                e.what,
                where=f"reward_hacking.verifier ({e.where})",
                fix=f"name one of the stage's rewards or another verifiable reward; {e.fix}",
            ) from None
        specs.append(extra)
    return specs


@dataclass
class HackingMonitor:
    learned: str  # labels in RewardBatch.per_function
    verifier: str
    config: RewardHackingConfig | None
    steps_over: int = 0

    @classmethod
    def of(cls, cfg: RLConfig, runner: Any) -> HackingMonitor | None:
        """The monitor for a stage, or None when it has no learned reward or no verifier to compare with."""
        rewards = list(zip(runner.rewards, runner.labels, strict=True))
        learned = [label for r, label in rewards if is_learned(r.spec.name)]
        if not learned:
            return None
        hacking = cfg.reward_hacking
        if hacking is not None:
            wanted = hacking.verifier.strip()
            verifier = next(label for r, label in rewards if wanted in _names(r.spec) | {label})
        else:  # both configured: the verifier is the run's accuracy reward, if it is a verifiable one
            index = runner.accuracy_index
            if index is None or not runner.rewards[index].correctness:
                return None
            verifier = runner.labels[index]
        return cls(learned[0], verifier, hacking)

    def update(self, generated: list[Scored]) -> dict[str, float]:
        """This step's metrics; counts the step against max_gap."""
        pairs = [
            (a, b)
            for s in generated
            for a, b in zip(s.per_function[self.learned], s.per_function[self.verifier], strict=True)
            if a is not None and b is not None
        ]
        learned, verifier = [a for a, _ in pairs], [b for _, b in pairs]
        mean_l, mean_v = _mean(learned), _mean(verifier)
        out = {
            "hacking/learned_mean": mean_l,
            "hacking/verifier_mean": mean_v,
            "hacking/gap": mean_l - mean_v,
            "hacking/corr": pearson(learned, verifier),
        }
        if self.config is not None and self.config.max_gap is not None:
            over = out["hacking/gap"] > self.config.max_gap  # a NaN gap is not over
            self.steps_over = self.steps_over + 1 if over else 0
            out["hacking/steps_over"] = float(self.steps_over)
        return out

    def act(
        self, step: int, metrics: dict[str, float], out: Path, checkpoint: Callable[[], None], main: bool
    ) -> None:
        """After `patience` steps over max_gap: print a warning (action: warn), or write a checkpoint and raise
        UserError (action: stop). `metrics`: this step's, from `update`."""
        from r1lab.training.tracking import console

        config = self.config
        if config is None or config.max_gap is None or self.steps_over < config.patience:
            return
        what = (
            f"reward hacking? the learned reward {self.learned!r} (mean {metrics['hacking/learned_mean']:.4g}) "
            f"is above the verifier {self.verifier!r} (mean {metrics['hacking/verifier_mean']:.4g}) by "
            f"{metrics['hacking/gap']:.4g} > max_gap {config.max_gap:g} for {self.steps_over} steps in a row "
            f"(steps {step - self.steps_over + 1}-{step}; correlation {metrics['hacking/corr']:.3g})"
        )
        if config.action == "warn":
            if main:
                console.print(f"[yellow]warning: {what}[/yellow]")
            return
        checkpoint()
        raise UserError(
            f"{what}, so the run stopped (reward_hacking.action: stop); a checkpoint of step {step} is in "
            f"{out / 'checkpoints'}",
            where=f"{out / 'metrics.jsonl'} (hacking/gap)",
            fix="read the samples the reward model prefers in samples.jsonl; retrain or regularise the reward "
            "(more data, a KL term), or raise reward_hacking.max_gap / patience and continue with --resume",
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation; NaN with fewer than 2 points or a constant side."""
    if len(x) < 2:
        return math.nan
    mx, my = _mean(x), _mean(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    vx = sum((a - mx) ** 2 for a in x)
    vy = sum((b - my) ** 2 for b in y)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan
