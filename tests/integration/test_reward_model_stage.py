"""`kind: reward_model` as a recipe step: it trains an ORM from the model it is given, is not evaluated (not a
policy), and the next stage goes on from that model, here RL scored by the ORM as a `model:` reward."""

from __future__ import annotations

import json

from test_recipe_cli import STAGES, r1lab, recipe


def test_a_reward_model_step_trains_an_orm_and_rl_goes_on_from_the_sft_model(tmp_path, tiny_model_dir):
    rows = [
        {"prompt": f"What is {i} + {i}?", "completion": str(2 * i + bad), "label": int(not bad)}
        for i in range(6)
        for bad in (0, 1)
    ]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    orm = {
        "name": "rm",
        "kind": "reward_model",
        "data": {"path": str(labelled), "max_length": 64},
        "optim": {"lr": 1e-3},
        "train": {"max_steps": 2, "batch_size": 4},
    }
    rl = {**STAGES[1], "rewards": [{"name": f"model:{run / 'rm' / 'final'}"}]}
    path = recipe(tmp_path, tiny_model_dir, stages=[STAGES[0], orm, rl])
    first = r1lab("run", str(path))
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((run / "pipeline.json").read_text())
    sft_model, entry = state["stages"]["sft"]["model"], state["stages"]["rm"]
    assert entry["status"] == "complete" and entry["input"] == sft_model and entry["model"] == sft_model
    assert entry["exported"] == str(run / "rm" / "final")
    assert json.loads((run / "rm" / "final" / "reward_model.json").read_text())["kind"] == "orm"
    assert state["stages"]["rl"]["input"] == sft_model  # RL trains the SFT model, not the reward model
    assert "rm" not in state["evals"] and "rl" in state["evals"]
    metrics = [json.loads(line) for line in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert any(key.startswith("reward/model:") for key in metrics[0])

    again = r1lab("run", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage rm: finished earlier, skipped" in again.stderr
