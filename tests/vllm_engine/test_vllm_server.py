"""Server mode (rollout.vllm_mode: server): vLLM in its own process, started and stopped by r1lab, weights
pushed over TCP. The same checks as the colocated engine's (log-probs vs the trainer's recomputation within
LOGP_ATOL, the weights after one update, full and LoRA), plus the process's life: a server that cannot start,
a wrong key, one killed in the middle of an RL run (a clear error, the checkpoint intact, --resume goes on
with a new server and the run learns the toy task), and no server process left behind.

vLLM starts three times here (~10-30 s each): the module's server, and the RL run's before and after the kill.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rl_testkit import read_metrics, rl_config, single_thread
from test_rollout_hf import prompts_for, recomputed_logprobs
from test_vllm_engine import LOGP_ATOL, SENTENCE, train_step
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import RolloutConfig
from r1lab.errors import UserError
from r1lab.rollout import SamplingParams, make_engine
from r1lab.rollout.vllm_client import LocalServer, VLLMServerEngine, connect
from r1lab.stages.rl import run_rl

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

SERVER = "r1lab.rollout.vllm_server"


def load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def servers_of_this_process() -> list[int]:
    """Pids of running vllm_server processes whose parent is this test process."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if SERVER in cmdline and int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def server_engine(vllm_model_dir):
    engine = make_engine(
        RolloutConfig(engine="vllm", vllm_mode="server"),
        load(vllm_model_dir),
        AutoTokenizer.from_pretrained(vllm_model_dir),
    )
    assert isinstance(engine, VLLMServerEngine) and engine.local is not None
    yield engine
    engine.close()


def test_sampled_logprobs_match_a_full_recomputation(server_engine, model, tokenizer):
    server_engine.update_weights(model)
    prompts = prompts_for(tokenizer)
    for temperature in (1.0, 0.7):
        r = server_engine.generate(
            prompts, 4, SamplingParams(temperature=temperature, max_new_tokens=12, seed=1)
        )
        assert r.prompt_index == [0] * 4 + [1] * 4 + [2] * 4 and r.completion_ids.shape[1] <= 12
        assert (r.logprobs * r.completion_mask).abs().sum() > 0
        torch.testing.assert_close(
            r.logprobs, recomputed_logprobs(model, r, temperature), atol=LOGP_ATOL, rtol=0
        )
    a = server_engine.generate(prompts, 4, SamplingParams(max_new_tokens=10, seed=7))
    b = server_engine.generate(prompts, 4, SamplingParams(max_new_tokens=10, seed=7))
    assert (
        a.completion_ids.tolist() == b.completion_ids.tolist() and a.texts == b.texts
    )  # seeds reach the server


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_after_an_update_the_server_samples_with_the_new_weights(server_engine, model, tokenizer, lora):
    """One optimizer step, one push: the server's log-probs are those of the new weights (and not of the
    old ones, which differ by far more than the tolerance); for LoRA the adapter merged on the way."""
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    before = load(Path(model.get_base_model().config.name_or_path if lora else model.config.name_or_path))
    server_engine.update_weights(model)
    prompts = prompts_for(tokenizer)[:2]
    sampling = SamplingParams(max_new_tokens=8, seed=3)
    r = server_engine.generate(prompts, 2, sampling)  # and the prompts' KV sits in the server's prefix cache
    torch.testing.assert_close(r.logprobs, recomputed_logprobs(model, r, 1.0), atol=LOGP_ATOL, rtol=0)

    train_step(model, tokenizer(SENTENCE, add_special_tokens=False)["input_ids"])
    server_engine.update_weights(model)
    r = server_engine.generate(prompts, 2, sampling)
    new = recomputed_logprobs(model, r, 1.0)
    assert (new - recomputed_logprobs(before, r, 1.0)).abs().max() > 0.05
    torch.testing.assert_close(r.logprobs, new, atol=LOGP_ATOL, rtol=0)


def test_a_wrong_key_is_refused_and_the_server_keeps_serving(server_engine, model, tokenizer):
    with pytest.raises(UserError, match="refused this process's key"):
        connect(server_engine.local.address, b"not the key", 5.0, server_engine.where)
    server_engine.update_weights(model)
    assert len(server_engine.generate(prompts_for(tokenizer)[:1], 2, SamplingParams(max_new_tokens=4))) == 2


def test_a_server_that_cannot_start_says_why(tmp_path, vllm_model_dir):
    bad = tmp_path / "bad-model"
    shutil.copytree(vllm_model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config | {"architectures": ["NoSuchModelForCausalLM"]}))
    before = set(servers_of_this_process())
    args = {
        "folder": str(bad),
        "tokenizer": str(bad),
        "dtype": "float32",
        "gpu_memory_utilization": 0.5,
        "seed": 0,
    }
    with pytest.raises(UserError, match="could not start") as e:
        LocalServer(args, timeout=900)  # vLLM's import alone took 5 min on this CPU under load
    assert "NoSuchModelForCausalLM" in str(e.value) and "server.log" in str(e.value)
    assert set(servers_of_this_process()) <= before  # (the module's server may be running beside it)


@pytest.fixture
def _one_thread():
    yield from single_thread()


def test_a_server_killed_mid_run_stops_it_clearly_and_resume_continues(
    tmp_path, vllm_model_dir, monkeypatch, _one_thread
):
    steps, kill_at = 30, 8
    overrides = {
        "rollout": {"engine": "vllm", "vllm_mode": "server", "n": 8, "max_new_tokens": 6},
        "prompts_per_step": 4,
        "optim": {"lr": 1e-2},
        "train": {"max_steps": steps, "batch_size": 16, "save_every": 5},
        "samples_every": 10,
    }
    calls = []
    generate = VLLMServerEngine.generate

    def dies_at_step_8(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:  # the server process is SIGKILLed just before this step's rollout
            os.kill(self.local.proc.pid, signal.SIGKILL)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(VLLMServerEngine, "generate", dies_at_step_8)
    before = set(servers_of_this_process())
    with pytest.raises(UserError, match="stopped during a generate request") as e:
        run_rl(rl_config(tmp_path, vllm_model_dir, overrides))
    assert "exited with code -9" in str(e.value) and "--resume" in str(e.value)
    run = tmp_path / "run"
    assert json.loads((run / "state.json").read_text())["status"] == "interrupted"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-5"]
    assert [m["step"] for m in read_metrics(run)] == list(range(1, kill_at))

    gc.collect()
    run_rl(rl_config(tmp_path, vllm_model_dir, overrides | {"train": overrides["train"] | {"resume": True}}))
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(
        range(1, steps + 1)
    )  # 6, 7 again from the checkpoint, then on
    assert json.loads((run / "state.json").read_text())["status"] == "complete"
    for m in metrics:  # every step samples from the weights its update starts from: the pushes arrive
        if m["tokens_trained"]:
            assert m["ratio"] == pytest.approx(1.0, abs=1e-3), m
    first = sum(m["reward/mean"] for m in metrics[:5]) / 5
    last = sum(m["reward/mean"] for m in metrics[-5:]) / 5
    assert last > first + 0.2, (first, last)
    gc.collect()
    assert set(servers_of_this_process()) <= before  # the run's servers are gone
