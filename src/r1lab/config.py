"""Typed configs for every stage: YAML files with `defaults:` inheritance and dotted `key=value` overrides.

Every section is a pydantic model that forbids unknown keys; a mistake is reported as a `UserError` naming the
key, the file (and line where it can be found) and the closest valid key.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1lab.errors import UserError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------------- sections


class LoraConfig(Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge_on_save: bool = False  # also write a merged full model beside the adapter
    # peft's init_lora_weights: default (B = 0), gaussian, pissa / olora (move the adapter's principal part out
    # of the base weights), corda (the same from activations of the first training examples; SFT only)
    init: Literal["default", "gaussian", "pissa", "olora", "corda"] = "default"


VLMPart = Literal["vision_tower", "projector", "language_model"]
VLM_PARTS = typing.get_args(VLMPart)


class ModelConfig(Strict):
    path: str = "smollm2-135m-instruct"  # named default, local HF folder, .gguf file, or hub id
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"  # dtype the weights are loaded in
    trust_remote_code: bool = False
    lora: LoraConfig | None = None
    gradient_checkpointing: bool = False
    chat_template: str | None = None  # a Jinja string or a file path; overrides the tokenizer's own
    attn_implementation: str | None = None  # e.g. "sdpa", "eager", "flash_attention_2"
    # the parts of a vision-language model kept fixed in training (None: vision_tower and projector, as
    # LLaMA-Factory's defaults); [vision_tower, language_model] is LLaVA's stage-1 alignment (projector only)
    freeze: list[VLMPart] | None = None

    @model_validator(mode="after")
    def _something_trains(self) -> ModelConfig:
        if self.freeze is not None and set(self.freeze) == set(VLM_PARTS):
            raise ValueError("model.freeze lists every part of the model, so nothing would train: remove one")
        if self.freeze is not None and self.lora is not None and "language_model" in self.freeze:
            raise ValueError(
                "model.lora trains an adapter on the language model, but model.freeze lists language_model: "
                "remove one of them"
            )
        return self


class DataConfig(Strict):
    path: str  # .jsonl/.json/.parquet/.csv file, a folder of them, or a datasets hub name
    split: str = "train"
    subset: str | None = None  # datasets config name
    format: Literal["auto", "messages", "prompt_completion", "prompt", "preference"] = "auto"
    columns: dict[str, str] = {}  # r1lab name -> column in the data, e.g. {messages: conversations}
    system_prompt: str | None = None
    max_length: int = Field(1024, gt=0)  # tokens, prompt + completion
    overlong: Literal["truncate", "drop"] = "truncate"
    limit: int | None = Field(None, gt=0)  # use only the first N examples
    shuffle: bool = True
    eval_path: str | None = None  # held-out file; else eval_fraction of the training data
    eval_fraction: float = Field(0.0, ge=0, lt=1)


class OptimConfig(Strict):
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # used when warmup_steps is 0
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)  # None: no clipping


ReportTo = Literal["tensorboard", "wandb", "mlflow", "trackio"]


class TrainConfig(Strict):
    """The loop settings every training stage shares."""

    output_dir: str = "runs/default"
    seed: int = 42
    batch_size: int = Field(8, gt=0)  # sequences per process per micro-batch
    grad_accum: int = Field(1, gt=0)  # micro-batches per optimizer step
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimizer steps; takes precedence over epochs
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # autocast; "auto": bf16 where supported
    log_every: int = Field(1, gt=0)
    eval_every: int | None = Field(None, gt=0)
    save_every: int | None = Field(None, gt=0)
    save_total_limit: int | None = Field(None, gt=0)  # keep only the newest N step checkpoints
    resume: bool | Literal["auto"] = False  # "auto": resume when a complete checkpoint exists
    report_to: list[ReportTo] = []
    # several processes: ddp (a full copy each) or fsdp2 (weights, gradients, optimizer state sharded)
    distributed: Literal["ddp", "fsdp2"] = "ddp"


class TrainingStage(Strict):
    """What the SFT and RL configs share: a partial section keeps the stage kind's defaults, and
    train.eval_every needs held-out data."""

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, data: Any) -> Any:
        return stage_defaults(cls, data)

    @model_validator(mode="after")
    def _eval_needs_held_out(self) -> Any:
        return needs_held_out(self)


class MaskThoughtConfig(Strict):
    """Masked Thought: response tokens of the input are replaced at rate
    p(step) = min(p_max, p_max * step / (warmup_fraction * total_steps + 1)); labels are unchanged."""

    p_max: float = Field(0.4, gt=0, lt=1)  # the paper: 0.4 on GSM8K, 0.2 on MATH
    warmup_fraction: float = Field(0.66, ge=0, le=1)
    replace_with: Literal["token", "random"] = "token"  # one mask token, or uniform random vocabulary tokens
    token: str | None = None  # the mask token; default the tokenizer's mask token, else unk, else pad

    @model_validator(mode="after")
    def _token_only_for_token(self) -> MaskThoughtConfig:
        if self.token is not None and self.replace_with != "token":
            raise ValueError("mask_thought.token is used only with replace_with: token: remove it")
        return self


class OTRConfig(Strict):
    """One-Token Rollout (`loss: otr`): k tokens sampled per target position, reward 1 for the gold token and
    negative_reward otherwise; loss -(1/k) sum r log p(a) + nll_weight * NLL. No value was published: knobs."""

    k: int = Field(8, gt=0)
    temperature: float = Field(1.0, gt=0)
    negative_reward: float = Field(-0.1, le=0)
    nll_weight: float = Field(0.0, ge=0)  # 0: OTR replaces NLL


class HFTConfig(Strict):
    """Half Fine-Tuning: per layer 2 of 4 attention matrices frozen; FFN 2 of 3 frozen in a random half of the
    layers, 1 of 3 in the rest (seeded by train.seed, recorded in hft.json of the run folder)."""

    others: Literal["train", "freeze"] = "train"  # embeddings, norms, LM head (the paper does not say)


class UDSConfig(Strict):
    """UDS (online batch selection): each micro-batch row scored by the nuclear norm of its target logits +
    alpha x its mean L2 distance to a FIFO queue of the last selected rows' logit sketches; only the top `keep`
    rows of every micro-batch are back-propagated and enqueued (r1lab.stages.sft_uds)."""

    keep: int = Field(4, gt=0)  # rows back-propagated per micro-batch (the paper's code: K = 4)
    alpha: float = Field(2.5e-3, ge=0)  # the diversity term's weight (their script: 1.5e-3)
    queue: int = Field(1024, gt=0)  # selected rows remembered
    sketch_dim: int = Field(1024, gt=0)  # coordinates of the logit sketch


class SFTConfig(TrainingStage):
    kind: Literal["sft"] = "sft"
    model: ModelConfig = ModelConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig(output_dir="runs/sft")
    packing: bool = False  # padding-free: several examples per row, block-diagonal attention
    loss: str = "nll"  # name in r1lab.algorithms.sft_losses
    mask_thought: MaskThoughtConfig | None = None  # Masked Thought: mask response tokens in the input
    hft: HFTConfig | None = None  # Half Fine-Tuning; `hft: true` takes the defaults
    otr: OTRConfig | None = None  # knobs of `loss: otr` (None: OTRConfig's defaults)
    uds: UDSConfig | None = None  # UDS: back-propagate only the top rows of each micro-batch

    @field_validator("hft", mode="before")
    @classmethod
    def _hft_flag(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @model_validator(mode="after")
    def _uds_selects_rows(self) -> SFTConfig:
        if self.uds is not None and self.packing:
            raise ValueError(
                "uds selects rows of a micro-batch, but packing puts several examples in a row: remove one"
            )
        if self.uds is not None and self.uds.keep >= self.train.batch_size:
            raise ValueError(
                f"uds.keep {self.uds.keep} keeps every row of a micro-batch of train.batch_size "
                f"{self.train.batch_size}: set it below the batch size"
            )
        return self

    @model_validator(mode="after")
    def _otr_knobs_need_otr(self) -> SFTConfig:
        if self.otr is not None and self.loss != "otr":
            raise ValueError(f"otr is read only by loss: otr (this stage has loss: {self.loss}): remove it")
        return self

    @model_validator(mode="after")
    def _hft_is_full_fine_tuning(self) -> SFTConfig:
        if self.hft is not None and self.model.lora is not None:
            raise ValueError(
                "hft freezes half of the full model's matrices, but model.lora trains an adapter instead: "
                "remove one of hft and model.lora"
            )
        return self


class RolloutConfig(Strict):
    # `async` is a Python keyword: the field is async_, read and written as `async` in YAML
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True
    )
    engine: Literal["auto", "hf", "vllm"] = "hf"  # auto: r1lab.rollout.engine_choice
    n: int = Field(8, ge=2)  # completions per prompt (the group size G)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0: off
    min_p: float = Field(0.0, ge=0, lt=1)
    max_new_tokens: int = Field(256, gt=0)
    stop: list[str] = []  # stop strings, besides the tokenizer's EOS
    batch_size: int | None = Field(None, gt=0)  # prompts per generate call; None: all at once
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)  # vllm only
    # vllm only: in the training process, or in its own process (r1lab.rollout.vllm_client)
    vllm_mode: Literal["colocate", "server"] = "colocate"
    server_address: str | None = None  # server mode: "host:port" of `r1lab vllm-serve`; None: start one here
    server_timeout: float = Field(600.0, gt=0)  # server mode: s to wait for the server to start / each reply
    # RL only: generate the next batch (with the weights one update old) while the current update runs;
    # staleness 1, pi_old recomputed by the trainer (r1lab.stages.rl_async)
    async_: bool = Field(False, alias="async")
    # RL only: multi-turn tool episodes (r1lab.stages.rl_episodes): tool specs as r1lab.tools.build_toolbox
    # takes them (calculator, python, search, {name: search, corpus: ..., k: 3}, module:function); [] = single-turn
    tools: list[str | dict[str, Any]] = []
    max_turns: int = Field(4, ge=1)  # model turns per episode (with tools); max_new_tokens bounds each turn
    max_episode_tokens: int | None = Field(None, gt=0)  # prompt + all turns; None: the model's context

    @model_validator(mode="after")
    def _episode_keys(self) -> RolloutConfig:
        # by value, not by fields set: a dumped config (config.yaml) writes the defaults out and must load back
        turns, budget = self.max_turns != 4, self.max_episode_tokens is not None
        unused = [k for k, v in (("max_turns", turns), ("max_episode_tokens", budget)) if v]
        if not self.tools and unused:
            raise ValueError(
                f"rollout.{unused[0]} is read only for multi-turn tool episodes, but rollout.tools is empty: "
                "remove it, or list the tools the policy may call in rollout.tools (e.g. [calculator])"
            )
        return self

    @model_validator(mode="after")
    def _server_keys(self) -> RolloutConfig:
        # each key is read here, so a key that would be ignored is refused, not silently dropped
        mode, address, timeout = self.vllm_mode, self.server_address, self.server_timeout
        if self.engine != "vllm" and mode != "colocate":
            raise ValueError(
                f"rollout.vllm_mode is read only by the vllm engine, but rollout.engine is {self.engine!r}: "
                "remove it, or set rollout.engine: vllm"
            )
        host, _, port = (address or "").rpartition(":")
        if address is not None and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(
                f"rollout.server_address {address!r} is not host:port: write it as e.g. 10.0.0.2:8100 (the "
                "address `r1lab vllm-serve` printed), or null to start a server here"
            )
        unused = [k for k, v in (("server_address", address), ("server_timeout", timeout != 600.0)) if v]
        if mode != "server" and unused:
            raise ValueError(
                f"rollout.{unused[0]} is read only in server mode, but rollout.vllm_mode is {mode!r}: remove "
                "it, or set rollout.engine: vllm and rollout.vllm_mode: server"
            )
        return self


class RewardSpec(Strict):
    name: str  # registered name, "package.module:function" or "path/to/file.py:function"
    weight: float = 1.0
    kwargs: dict[str, Any] = {}
    timeout: float = Field(10.0, gt=0)  # seconds per call
    failure_reward: float = 0.0  # given when the function raises or times out


class RewardHackingConfig(Strict):
    """RL with a learned reward (model:PATH): compare it each step with a verifier on the same samples
    (r1lab.stages.rl_hacking); `verifier` names a reward of the stage, or one scored only for this (weight 0)."""

    verifier: str  # a reward name (or its label in the logs), e.g. countdown or math
    max_gap: float | None = None  # act when mean(learned) - mean(verifier) exceeds it; None: only log
    action: Literal["warn", "stop"] = "warn"  # stop: checkpoint, then end the run with a message
    patience: int = Field(1, gt=0)  # consecutive steps over max_gap before acting


class RolloutCorrectionConfig(Strict):
    """Importance weights for a sampler that is not the trainer's current policy (vLLM, rollout.async);
    r1lab.algorithms.rollout_correction. Unset bounds: verl 0.9.1's presets (ROLLOUT_CORRECTION_BOUNDS)."""

    mode: Literal["tis", "mis"] = "tis"  # truncate the weight at `threshold`, or mask it outside the bounds
    level: Literal["token", "sequence", "geometric"] = "token"  # geometric: mis only (a filter)
    threshold: float | None = Field(None, gt=0)  # upper bound of the weight
    lower: float | None = Field(None, gt=0)  # mis only: lower bound of the weight

    @model_validator(mode="after")
    def _mode_keys(self) -> RolloutCorrectionConfig:
        if self.mode == "tis" and self.lower is not None:
            raise ValueError("rollout_correction.lower is read only by mode: mis (tis only caps the weight)")
        if self.mode == "tis" and self.level == "geometric":
            raise ValueError(
                "rollout_correction.level: geometric is a filter on the geometric mean of the ratios, not a "
                "weight: set mode: mis, or level: token | sequence"
            )
        low, high = self.bounds()
        if low is not None and low > high:
            raise ValueError(f"rollout_correction.lower ({low}) is above its threshold ({high})")
        return self

    def bounds(self) -> tuple[float | None, float]:
        """(lower, upper) as set, else verl's published ones for this mode and level."""
        low, high = ROLLOUT_CORRECTION_BOUNDS[(self.mode, self.level)]
        return (
            low if self.lower is None else self.lower,
            high if self.threshold is None else self.threshold,
        )


# verl 0.9.1's RolloutCorrectionConfig presets: decoupled_token_is / decoupled_seq_is (2.0),
# decoupled_token_icepop (0.5, 5.0), decoupled_seq_is_rs (0.5, 2.0), decoupled_geo_rs (0.999, 1.001)
ROLLOUT_CORRECTION_BOUNDS = {
    ("tis", "token"): (None, 2.0),
    ("tis", "sequence"): (None, 2.0),
    ("mis", "token"): (0.5, 5.0),
    ("mis", "sequence"): (0.5, 2.0),
    ("mis", "geometric"): (0.999, 1.001),
}


class AlgorithmConfig(Strict):
    advantage: str = "grpo"  # name in r1lab.algorithms.advantages
    policy_loss: str = "ppo_clip"  # objective: name in r1lab.algorithms.policy_losses.POLICY_LOSSES
    # token_mean | seq_mean_token_mean | seq_mean_token_sum_norm (r1lab.algorithms.policy_losses.LOSS_AGGS)
    loss_agg: str = "seq_mean_token_mean"
    # clip range of ppo_clip / gspo / cispo; unset: the objective's published default (OBJECTIVE_EPS)
    eps_low: float | None = Field(None, ge=0)
    eps_high: float | None = Field(None, ge=0)
    sapo_tau_pos: float = Field(1.0, gt=0)  # sapo's gate temperature for A > 0
    sapo_tau_neg: float = Field(1.05, gt=0)  # sapo's gate temperature for A <= 0
    entropy_coef: float = Field(0.0, ge=0)  # entropy bonus: loss - coef x entropy (same aggregation)
    beta: float = Field(0.0, ge=0)  # KL weight to the reference; 0: no reference model
    kl_estimator: str = "k3"  # name in r1lab.algorithms.kl.KL_ESTIMATORS
    mu: int = Field(1, gt=0)  # updates per generation batch
    mask_truncated: bool = False  # no loss on completions cut at max_new_tokens
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal, refill from next prompts
    max_refills: int = Field(4, ge=0)  # extra generation rounds allowed per step for dynamic sampling
    # importance weights for a sampler that is not the trainer (engine: vllm or rollout.async); None: off
    rollout_correction: RolloutCorrectionConfig | None = None

    @field_validator("policy_loss")
    @classmethod
    def _old_loss_name(cls, name: str) -> str:
        if name in OLD_LOSS_NAMES:  # before the objective / aggregation split these named the aggregation
            raise ValueError(
                f"{name!r} is no longer a policy loss: the objective and its aggregation are two keys now; "
                f"write `policy_loss: ppo_clip` and `loss_agg: {OLD_LOSS_NAMES[name]}` (the same loss)"
            )
        return name

    def clip_range(self) -> tuple[float | None, float | None]:
        """(eps_low, eps_high) as set, else the objective's published default (None: it has no clip)."""
        low, high = OBJECTIVE_EPS.get(self.policy_loss, (None, None))
        return (
            low if self.eps_low is None else self.eps_low,
            high if self.eps_high is None else self.eps_high,
        )

    @model_validator(mode="after")
    def _objective_keys(self) -> AlgorithmConfig:
        for key in ("eps_low", "eps_high"):  # objectives without a clip would ignore them
            if self.policy_loss in UNCLIPPED_OBJECTIVES and getattr(self, key) is not None:
                raise ValueError(
                    f"{key} is not read by policy_loss {self.policy_loss} (it has no clip): remove it"
                )
        defaults = AlgorithmConfig.model_fields
        for key in ("sapo_tau_pos", "sapo_tau_neg"):
            if self.policy_loss != "sapo" and getattr(self, key) != defaults[key].default:
                raise ValueError(
                    f"{key} is read only by policy_loss sapo: remove it or set policy_loss: sapo"
                )
        return self


# (eps_low, eps_high) when unset: PPO/GRPO 0.2; GSPO's paper 3e-4 / 4e-4 (on the sequence ratio); CISPO as
# verl's convention clip(ρ, 1 - eps_low, 1 + eps_high) with no lower bound and the weight capped at 5 (ScaleRL)
OBJECTIVE_EPS = {"ppo_clip": (0.2, 0.2), "gspo": (3e-4, 4e-4), "cispo": (1.0, 4.0)}
UNCLIPPED_OBJECTIVES = {"sapo", "gpg", "reinforce"}


class PassRateFilterConfig(Strict):
    """RIF-RFT's filter before RL: roll out k per training prompt with the initial policy (the pass-rate
    measurement of `r1lab data select --method pass_rate`) and drop the prompts it never solves (`never`), always
    solves (`always`) or both; pass rates and counts go to the stage folder (r1lab.stages.rl_prompt_filter)."""

    k: int = Field(8, ge=2)  # samples per prompt (at rollout.temperature and rollout.max_new_tokens)
    drop: Literal["never", "always", "both"] = "never"


# policy_loss names of the aggregation before it became algorithm.loss_agg (objective ppo_clip)
OLD_LOSS_NAMES = {"grpo": "seq_mean_token_mean", "dr_grpo": "seq_mean_token_sum_norm", "dapo": "token_mean"}


class RLConfig(TrainingStage):
    kind: Literal["rl"] = "rl"
    model: ModelConfig = ModelConfig()
    data: DataConfig  # prompts; other columns (gold answers...) are passed to the rewards
    optim: OptimConfig = OptimConfig(lr=1e-6, scheduler="constant")
    train: TrainConfig = TrainConfig(output_dir="runs/rl", batch_size=8)
    rollout: RolloutConfig = RolloutConfig()
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="math")], min_length=1)
    algorithm: AlgorithmConfig = AlgorithmConfig()
    prompts_per_step: int = Field(8, gt=0)  # prompts per generation step, across all processes
    samples_every: int = Field(10, gt=0)  # write sample completions to samples.jsonl every N steps
    max_bad_steps: int = Field(3, gt=0)  # stop after this many NaN/inf steps in a row
    # stop when a reward failed on every call of this many steps in a row
    max_reward_failure_steps: int = Field(3, gt=0)
    # AceReason 1.1's rule: rollout.temperature is picked before training so that a probe batch's mean token
    # entropy at it is closest to this (the paper: 0.3); r1lab.stages.rl_temperature
    target_entropy: float | None = Field(None, gt=0)
    reward_hacking: RewardHackingConfig | None = None  # learned reward vs a verifier, each step
    pass_rate_filter: PassRateFilterConfig | None = None  # RIF-RFT: drop prompts by pass rate first

    @model_validator(mode="after")
    def _hacking_needs_a_learned_reward(self) -> RLConfig:
        hacking = self.reward_hacking
        if hacking is None:
            return self
        if not any(r.name.strip().startswith("model:") for r in self.rewards):
            raise ValueError(
                "reward_hacking compares a learned reward with a verifier, but no reward is a learned one: add "
                "{name: 'model:path/to/reward_model'} to rewards, or remove reward_hacking"
            )
        if hacking.verifier.strip().startswith("model:"):
            raise ValueError("reward_hacking.verifier must be a verifiable reward (e.g. math), not a model:")
        if hacking.max_gap is None and {"action", "patience"} & hacking.model_fields_set:
            raise ValueError("reward_hacking.action and patience act on max_gap: set max_gap, or remove them")
        return self

    @model_validator(mode="after")
    def _filter_is_single_turn(self) -> RLConfig:
        if self.pass_rate_filter is not None and self.rollout.tools:
            raise ValueError(
                "pass_rate_filter samples single-turn completions, but rollout.tools makes the rollouts "
                "multi-turn episodes: remove one of them"
            )
        return self

    @model_validator(mode="after")
    def _temperature_or_target_entropy(self) -> RLConfig:
        if self.target_entropy is not None and "temperature" in self.rollout.model_fields_set:
            raise ValueError(
                "rollout.temperature and target_entropy both set: target_entropy picks the temperature; "
                "remove one of them"
            )
        return self

    @field_validator("rollout")
    @classmethod
    def _vllm_only_keys(cls, rollout: RolloutConfig) -> RolloutConfig:
        # the HF engine generates with the training model itself: a memory fraction would be silently ignored
        default = RolloutConfig.model_fields["gpu_memory_utilization"].default
        if rollout.engine != "vllm" and rollout.gpu_memory_utilization != default:
            raise ValueError(
                f"rollout.gpu_memory_utilization is read only by the vllm engine, but rollout.engine is "
                f"{rollout.engine!r}: remove it, or set rollout.engine: vllm"
            )
        return rollout

    @model_validator(mode="after")
    def _correction_needs_another_sampler(self) -> RLConfig:
        # the HF engine without async samples with the trainer's own current weights: every weight would be 1
        if self.algorithm.rollout_correction is not None and not sampler_differs(self):
            raise ValueError(
                f"algorithm.rollout_correction is set, but rollout.engine is {self.rollout.engine}"
                f"{' (it may fall back to hf)' if self.rollout.engine == 'auto' else ''} without rollout.async: "
                "the sampler is the trainer itself (same weights, same forward), so every importance weight is 1; "
                "remove it, or set rollout.engine: vllm or rollout.async: true"
            )
        return self

    @model_validator(mode="after")
    def _async_overlaps(self) -> RLConfig:
        # a checkpoint step generates its next batch after the update (rl_async): with one every step there
        # would be nothing left to overlap
        if self.rollout.async_ and self.train.save_every == 1:
            raise ValueError(
                "rollout.async is on but train.save_every is 1: every checkpoint step generates the next batch "
                "after its update (so a resumed run matches an uninterrupted one), which leaves nothing to run "
                "asynchronously; raise train.save_every or set rollout.async: false"
            )
        return self

    @field_validator("train")
    @classmethod
    def _no_grad_accum(cls, train: TrainConfig) -> TrainConfig:
        if train.grad_accum != 1:  # the micro-batches follow from the generation batch
            raise ValueError(
                f"train.grad_accum is {train.grad_accum}, but RL does not use it: one step updates on its "
                "whole generation batch (prompts_per_step x rollout.n rows) split into micro-batches of "
                "train.batch_size; remove train.grad_accum (set train.batch_size for the memory per forward)"
            )
        return train

    @field_validator("data")
    @classmethod
    def _prompts_are_dropped_not_cut(cls, data: DataConfig) -> DataConfig:
        # a cut question has no right answer: RL drops prompts longer than data.max_length (and counts them)
        if "overlong" not in data.model_fields_set:
            return data.model_copy(update={"overlong": "drop"})
        if data.overlong != "drop":
            raise ValueError(
                f"data.overlong is {data.overlong!r}, but RL never cuts a prompt (a cut question has no "
                "right answer): prompts longer than data.max_length are dropped and counted; set "
                "data.overlong: drop (the RL default) or raise data.max_length"
            )
        return data


class PairsConfig(Strict):
    """On-policy pairs (r1lab.stages.dpo_onpolicy): before training, a DPO stage samples its pairs from its own
    input model on data.path's prompts (prompts from `offset` on, in file order) and trains on them."""

    n: int = Field(4, gt=0)  # completions sampled per prompt
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(16, gt=0)  # prompts per generate call
    # verified: a verified-correct sample against an incorrect one; solution: the prompt's written solution
    # (its `completion` column) against an incorrect sample (for a model that solves nothing yet)
    chosen: Literal["verified", "solution"] = "verified"
    offset: int = Field(0, ge=0)  # skip the first N prompts (e.g. the ones an SFT stage trained on)
    limit: int | None = Field(None, gt=0)  # stop at N pairs; None: every prompt from `offset` on
    pairs_per_prompt: int = Field(1, gt=0)
    rewards: list[str] = []  # rewards that score the samples; a task recipe fills in the task's own

    @model_validator(mode="after")
    def _two_samples_to_pair(self) -> PairsConfig:
        if self.chosen == "verified" and self.n < 2:
            raise ValueError("pairs.n must be at least 2 to find a correct and an incorrect sample")
        return self


def sampler_differs(cfg: RLConfig) -> bool:
    """True when the rollouts' log-probs are not the trainer's current ones: an engine with its own weights
    (vLLM) or one-step off-policy rollouts (rollout.async). Then pi_old can be recomputed and corrected."""
    return cfg.rollout.engine == "vllm" or cfg.rollout.async_


class DPOConfig(TrainingStage):
    """Preference optimisation (DPO family) on chosen/rejected pairs; see r1lab.algorithms.preference_losses."""

    kind: Literal["dpo"] = "dpo"
    model: ModelConfig = ModelConfig()
    data: DataConfig  # preference pairs: chosen + rejected (+ prompt)
    optim: OptimConfig = OptimConfig(lr=1e-6)
    train: TrainConfig = TrainConfig(output_dir="runs/dpo", batch_size=4)  # batch_size: pairs per micro-batch
    loss: str = "sigmoid"  # name in r1lab.algorithms.preference_losses.PREFERENCE_LOSSES
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)  # sigmoid (cDPO) and robust
    simpo_gamma: float = Field(0.5, ge=0)  # simpo's target margin
    rpo_alpha: float = Field(0.0, ge=0)  # weight of an NLL term on the chosen response
    # where the reference log-probs come from: one pass before training, cached in the run folder, or (LoRA
    # only) the same model with its adapter disabled, on line
    reference: Literal["precompute", "adapter_disabled"] = "precompute"
    pairs: PairsConfig | None = None  # sample the pairs from the input model first; data.path holds prompts

    @model_validator(mode="after")
    def _pairs_need_rewards(self) -> DPOConfig:
        if self.pairs is not None and not self.pairs.rewards:
            raise ValueError("pairs.rewards: name the reward that scores the samples, e.g. [countdown]")
        if self.pairs is not None and self.data.limit is not None:
            raise ValueError("with pairs, data.limit is not read: set pairs.limit (pairs) or pairs.offset")
        return self

    @model_validator(mode="after")
    def _reference_source(self) -> DPOConfig:
        if self.reference == "adapter_disabled" and self.model.lora is None:
            raise ValueError(
                "reference: adapter_disabled needs a LoRA run (model.lora): set model.lora, or use "
                "reference: precompute"
            )
        return self


def needs_held_out(cfg: Any) -> Any:
    """train.eval_every evaluates on held-out data: without any it would be silently ignored."""
    if cfg.train.eval_every and not (cfg.data.eval_path or cfg.data.eval_fraction):
        raise ValueError(
            "train.eval_every is set but nothing is held out to evaluate on: set data.eval_path or "
            "data.eval_fraction, or remove train.eval_every"
        )
    return cfg


def stage_defaults(cls: type[BaseModel], data: Any) -> Any:
    """A partial section keeps the stage kind's own defaults for the keys it leaves out: RL's `optim: {lr: X}`
    stays on RL's constant schedule instead of falling back to OptimConfig's generic cosine."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, field in cls.model_fields.items():
        if isinstance(field.default, BaseModel) and isinstance(out.get(name), dict):
            out[name] = {**field.default.model_dump(exclude_unset=True), **out[name]}
    return out


SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class EvalSuiteConfig(Strict):
    """One extra held-out set of `eval.suites` (forgetting): a built-in task (its test file written once to the
    run's data folder), a user file with rewards, or `perplexity` of the model on a held-out chat/SFT file."""

    name: str  # unique; a folder name and the suite's column/section in the tables
    task: str | None = None  # built-in task (its reward and system prompt), or the task a `data` file is of
    options: dict[str, Any] = {}  # the task's own knobs
    test_size: int = Field(200, gt=0)  # problems generated for a task suite
    seed: int = 0  # task suite: its generator's seed
    data: str | None = None  # a prompt file scored with `rewards` (as eval.data)
    rewards: list[RewardSpec] = []
    system_prompt: str | None = None
    columns: dict[str, str] = {}
    split: str = "test"
    limit: int | None = Field(None, gt=0)  # the first N problems (documents for perplexity)
    perplexity: str | None = None  # a chat/SFT file: mean NLL of its assistant tokens, and ppl
    max_length: int = Field(2048, gt=0)  # perplexity: tokens per document (longer ones are truncated)

    @model_validator(mode="after")
    def _one_source(self) -> EvalSuiteConfig:
        if not SUITE_NAME.match(self.name):
            raise ValueError(f"suite name {self.name!r}: use letters, digits, '_', '.', '-' (a folder name)")
        if self.perplexity is not None and (self.task or self.data or self.rewards):
            raise ValueError(f"suite {self.name!r}: `perplexity` takes no task, data or rewards")
        if self.perplexity is None and not self.task and not (self.data and self.rewards):
            raise ValueError(f"suite {self.name!r} needs `task`, `data` with `rewards`, or `perplexity`")
        return self


class EvalConfig(Strict):
    task: str | None = None  # built-in task; else data + rewards
    data: str | None = None
    rewards: list[RewardSpec] = []
    split: str = "test"
    limit: int | None = Field(None, gt=0)
    n: int = Field(1, gt=0)  # samples per problem for pass@k / maj@k (greedy accuracy is always computed)
    k: list[int] = [1]
    temperature: float = Field(0.7, ge=0)
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(32, gt=0)
    system_prompt: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"  # weights while generating
    columns: dict[str, str] = {}  # as data.columns: r1lab name -> column in the data, e.g. {prompt: question}
    engine: Literal["auto", "hf", "vllm"] = "hf"  # generation engine (rollout.engine's choices)
    suites: list[EvalSuiteConfig] = []  # more held-out sets at every eval point (r1lab.eval.suites)

    @model_validator(mode="after")
    def _task_or_data(self) -> EvalConfig:
        if not self.task and not self.data:
            raise ValueError("eval needs either `task` (a built-in task) or `data` with `rewards`")
        if any(k > self.n for k in self.k):
            raise ValueError(f"every k in {self.k} must be <= n ({self.n})")
        names = [s.name for s in self.suites]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"suite names must be unique; used twice: {', '.join(twice)}")
        return self


class TaskDataConfig(Strict):
    """A built-in task whose train/test files a recipe writes into its run folder (see `r1lab data make`)."""

    name: str  # a task in r1lab.tasks
    train_size: int = Field(2000, gt=0)
    test_size: int = Field(500, gt=0)
    seed: int = 0
    options: dict[str, Any] = {}  # the task's own knobs, e.g. digits


class StageTaskConfig(Strict):
    """A recipe stage's own task (a curriculum step, e.g. Countdown with 2, then 3, then 4 numbers): merged over
    the recipe's `task:`, its train file written per stage; the held-out eval stays on the recipe's test set."""

    name: str | None = None  # default: the recipe's task, whose options the stage's options are merged over
    options: dict[str, Any] = {}  # the task's own knobs (`r1lab data tasks`)
    train_size: int | None = Field(None, gt=0)  # default: the recipe task's
    seed: int | None = None  # default: the recipe task's


class RecipeConfig(Strict):
    """An ordered list of stages; each stage's output model is the next stage's input."""

    name: str
    output_dir: str | None = None  # default: runs/<name>
    model: ModelConfig = ModelConfig()  # the base model, input of the first stage
    task: TaskDataConfig | None = (
        None  # stages without `data` train on this task; eval defaults to its test set
    )
    # run on the base model and after every stage; validated as EvalConfig once the task's files are filled in
    eval: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = Field(min_length=1)  # each: {name, kind: sft|rl, ...that stage's config}
    # arms (paths through the stages), baseline, seeds, sweeps; validated by r1lab.experiments.spec
    experiment: dict[str, Any] | None = None


class MergeModelParameters(Strict):
    weight: float = 1.0  # linear: soup weight; task_arithmetic, transfer, lines, ties, dare: λ_i of Δ_i


class MergeModel(Strict):
    model: str  # HF folder, named default, hub id, LoRA adapter folder, or (in a recipe) an earlier stage
    parameters: MergeModelParameters = MergeModelParameters()


class MergeConfig(Strict):
    """A merge in mergekit's YAML shape (merge_method, base_model, models: [{model, parameters: {weight}}],
    parameters); the method parameters allowed are the operator's own (r1lab.algorithms.merge)."""

    kind: Literal["merge"] = "merge"
    merge_method: str  # name in r1lab.algorithms.merge.MERGE_METHODS
    base_model: str | None = None  # θ_base of the task vectors (transfer: the source base)
    target_model: str | None = None  # transfer only: the new base the task vectors are added to
    models: list[MergeModel] = Field(min_length=1)
    parameters: dict[str, float | bool] = {}  # method parameters: normalize, density, lambda, t, alpha, beta
    seed: int = 0  # dare's drop masks (one generator per tensor, seeded from seed and the tensor name)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # None: the dtype of the inputs
    output: str = "runs/merge"  # set by the caller: `r1lab merge`'s OUTPUT, or the recipe's stage folder
    overwrite: bool = False
    max_shard_mb: int = Field(5000, gt=0)  # output shards of at most this size (one tensor may exceed it)
    trust_remote_code: bool = False  # LoRA inputs: loading their base to merge the adapter in
    # greedy_soup only: the held-out set each candidate soup is scored on (an `eval:` section: task or data)
    validation: dict[str, Any] | None = None


class ExportConfig(Strict):
    """A recipe step that writes the model it is given (the previous stage's, or `input:`'s) as GGUF for llama.cpp
    or as a plain HF folder (r1lab.models.export). It trains nothing and is not evaluated; the next stage goes on
    from the model it was given, not from the exported file."""

    kind: Literal["export"] = "export"
    to: Literal["gguf", "hf"]
    quant: Literal["f32", "f16", "q8_0", "q4_k_m"] = "f16"  # GGUF only; r1lab.models.export.QUANTS
    model: str = ""  # set by the pipeline: the model this step is given
    output: str = ""  # set by the pipeline: the stage folder

    @model_validator(mode="after")
    def _quant_is_for_gguf(self) -> ExportConfig:
        if self.to == "hf" and "quant" in self.model_fields_set:
            raise ValueError("`quant` applies to `to: gguf` only; an HF folder keeps the model's own dtype")
        return self


class RewardModelConfig(TrainingStage):
    """An outcome reward model (ORM): a one-label sequence-classification head on a causal LM, trained on
    labelled completions (loss bce) or preference pairs (loss bradley_terry); see r1lab.stages.reward_model."""

    kind: Literal["reward_model"] = "reward_model"
    model: ModelConfig = ModelConfig()
    data: DataConfig  # prompt + completion + label (0/1) rows, or chosen + rejected (+ prompt) pairs
    optim: OptimConfig = OptimConfig(lr=1e-5)
    train: TrainConfig = TrainConfig(output_dir="runs/reward_model", batch_size=8)  # rows/pairs a micro-batch
    loss: str = "bce"  # name in r1lab.algorithms.reward_losses.REWARD_LOSSES
    step_sep: str = "\n"  # loss prm_bce: the text after each step, where its score is read

    @model_validator(mode="after")
    def _final_is_a_full_model(self) -> RewardModelConfig:
        if not self.step_sep:
            raise ValueError('step_sep is empty: give the text that ends a step, e.g. step_sep: "\\n"')
        lora = self.model.lora
        if lora is not None and (lora.merge_on_save or "merge_on_save" in lora.model_fields_set):
            raise ValueError(
                "model.lora.merge_on_save: a reward model's final/ is always the merged full model (so that "
                "AutoModelForSequenceClassification loads it): remove the key"
            )
        if self.train.distributed == "fsdp2":
            raise ValueError("train.distributed: fsdp2 is not supported by the reward_model stage: use ddp")
        return self


class MetisConfig(Strict):
    """Metis-RISE's data step (r1lab.stages.metis): SFT data from an RL stage's per-prompt accuracy
    (prompt_stats.jsonl): the recorded verified-correct self-sample of each prompt with 0 < acc < 1, the written
    solution of each prompt with acc = 0. Trains nothing; writes `output`/sft.jsonl."""

    kind: Literal["metis"] = "metis"
    rl_stage: str = ""  # the RL stage folder; set by the pipeline (`input:`'s stage, else the previous one)
    output: str = ""  # set by the pipeline: the stage folder
    # acc = 0 prompts: this model's first verified sample instead of the written solution (kept where it finds none)
    teacher: str | None = None
    k: int = Field(8, ge=1)  # teacher samples per prompt, besides its greedy one
    temperature: float = Field(0.7, ge=0)
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(8, gt=0)

    @model_validator(mode="after")
    def _sampling_needs_a_teacher(self) -> MetisConfig:
        knobs = sorted({"k", "temperature", "max_new_tokens", "batch_size"} & self.model_fields_set)
        if self.teacher is None and knobs:
            raise ValueError(f"{knobs[0]} sets how the teacher samples, but no teacher is set: add one")
        return self


STAGE_KINDS = {
    "sft": SFTConfig,
    "rl": RLConfig,
    "merge": MergeConfig,
    "dpo": DPOConfig,
    "export": ExportConfig,
    "reward_model": RewardModelConfig,
    "metis": MetisConfig,
}


# ---------------------------------------------------------------------------------------------- loading


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, resolving `defaults:` (a path or list of paths, relative to the file)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise UserError(
            "config files inherit from each other in a cycle", where=chain, fix="remove one `defaults:`"
        )
    if not path.is_file():
        raise UserError(f"config file not found: {path}", fix="check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(
            f"invalid YAML: {getattr(e, 'problem', e)}", where=where, fix="fix the YAML syntax"
        ) from None
    if not isinstance(data, dict):
        raise UserError("a config file must hold a mapping of keys", where=str(path))
    parents = data.pop("defaults", None) or []
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = deep_merge(merged, load_yaml(path.parent / parent, (*_seen, path)))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted `a.b.c=value` overrides; values are parsed as YAML (`1e-5`, `true`, `[a, b]`)."""
    data = deep_merge({}, data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} is not of the form key=value", fix="e.g. optim.lr=1e-5")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else child
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    return data


def validate(model_cls: type[M], data: dict[str, Any], source: str | Path | None = None) -> M:
    """Validate `data` into `model_cls`, turning pydantic's errors into one readable `UserError`."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        lines = [_describe(model_cls, err, source) for err in e.errors()]
        where = str(source) if source else None
        raise UserError("invalid config:\n" + "\n".join(lines), where=where) from None


def load_config(model_cls: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    data = apply_overrides(load_yaml(path), overrides or [])
    return validate(model_cls, data, path)


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def _describe(model_cls: type[BaseModel], err: Any, source: str | Path | None) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        valid = _fields_at(model_cls, err["loc"][:-1])
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys here: {', '.join(sorted(valid))}"
        return f"  - unknown key {loc!r}{_line_of(source, key)}: {hint}"
    return f"  - {loc or '(top level)'}{_line_of(source, str(err['loc'][-1]) if err['loc'] else '')}: {err['msg']}"


def _fields_at(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model found at `loc` (walking through Optional, list and union fields)."""
    current: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        candidates = [m for m in _models_in(current) if part in m.model_fields]
        if not candidates:
            candidates = [m for m in _models_in(current) if m.model_config.get("title") == part]
        if not candidates:
            return []
        current = candidates[0].model_fields[part].annotation
    return sorted({name for m in _models_in(current) for name in m.model_fields})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType, list, tuple, Annotated, dict):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _line_of(source: str | Path | None, key: str) -> str:
    if not source or not key or not Path(source).is_file():
        return ""
    for number, line in enumerate(Path(source).read_text().splitlines(), start=1):
        if re.match(rf"\s*-?\s*{re.escape(key)}\s*:", line):
            return f" (line {number})"
    return ""
