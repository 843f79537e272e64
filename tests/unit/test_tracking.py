"""report_to backends: what each library stored locally, read back through the library's own reader."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1lab.errors import UserError
from r1lab.training.backends import require_backends
from r1lab.training.tracking import Tracker

CONFIG = {"train": {"seed": 7, "report_to": ["x"]}, "optim": {"lr": 0.001}, "loss": "nll"}
LOGGED = [(1, {"loss": 2.0, "reward/mean": 0.25}), (2, {"loss": 1.5, "reward/mean": 0.5})]


def log_run(out: Path, backend: str) -> None:
    tracker = Tracker(out, enabled=True, total_steps=2, report_to=[backend], config=CONFIG)
    for step, metrics in LOGGED:
        tracker.log(step, {**metrics, "note": "text is not a metric", "bad": float("nan")})
    tracker.close()


def history(rows: list[tuple[str, int, float]]) -> dict[str, list[tuple[int, float]]]:
    by_key: dict[str, list[tuple[int, float]]] = {}
    for key, step, value in rows:
        by_key.setdefault(key, []).append((step, value))
    return by_key


EXPECTED = {"loss": [(1, 2.0), (2, 1.5)], "reward/mean": [(1, 0.25), (2, 0.5)]}


def test_tensorboard_events_hold_the_metrics_and_the_config(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_run(tmp_path, "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "reward/mean"]
    got = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in ("loss", "reward/mean")}
    assert got == EXPECTED
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.001" in text and "seed: 7" in text


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (`run-*.wandb`): wandb's LevelDB-style framing (a 7-byte file
    header, 32 KiB blocks, chunks with a 7-byte header: crc, length, type) around its own protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def key(item) -> str:
    """A wandb record item's name: `key`, or the parts of `nested_key` (keys holding a "/")."""
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_run_holds_the_metrics_and_the_config(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_run(tmp_path, "wandb")
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    config = {}  # the run record carries the initial config, config records any later update
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            updates = r.run.config.update if kind == "run" else r.config.update
            config.update({key(item): json.loads(item.value_json) for item in updates})
    assert set(CONFIG) <= set(config), ([r.WhichOneof("record_type") for r in records], config)
    assert {k: config[k] for k in CONFIG} == CONFIG
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {key(item): json.loads(item.value_json) for item in r.history.item}
            rows += [(k, items["_step"], v) for k, v in items.items() if not k.startswith("_")]
    assert history(rows) == EXPECTED


def test_mlflow_sqlite_store_holds_the_metrics_and_the_config_as_params(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store goes into the run folder
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    log_run(tmp_path, "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("r1lab")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == f"{tmp_path.parent.name}/{tmp_path.name}"
    assert run.data.params == {
        "train.seed": "7",
        "train.report_to": "['x']",
        "optim.lr": "0.001",
        "loss": "nll",
    }
    assert set(run.data.metrics) == {"loss", "reward/mean"}
    rows = [
        (m.key, m.step, m.value)
        for key in run.data.metrics
        for m in client.get_metric_history(run.info.run_id, key)
    ]
    assert history(sorted(rows)) == EXPECTED


def test_trackio_local_store_holds_the_metrics_and_the_config(tmp_path) -> None:
    # trackio fixes its store folder (TRACKIO_DIR) when imported, so the run goes in its own process.
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_tracking import log_run
        log_run(Path({str(tmp_path / "stage")!r}), "trackio")
        from trackio.sqlite_storage import SQLiteStorage
        name = {f"{tmp_path.name}/stage"!r}
        print(json.dumps({{"logs": SQLiteStorage.get_logs("r1lab", name),
                          "config": SQLiteStorage.get_run_config("r1lab", name)}}))
        """
    )
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert {k: got["config"][k] for k in CONFIG} == CONFIG
    rows = [(k, row["step"], v) for row in got["logs"] for k, v in row.items() if k in EXPECTED]
    assert history(rows) == EXPECTED
    assert (tmp_path / "trackio" / "r1lab.db").is_file()


def test_only_the_main_process_starts_a_backend(tmp_path) -> None:
    tracker = Tracker(tmp_path / "rank1", enabled=False, total_steps=1, report_to=["tensorboard", "mlflow"])
    tracker.log(1, {"loss": 1.0})
    tracker.close()
    assert not (tmp_path / "rank1").exists()


@pytest.mark.parametrize("backend", ["wandb", "mlflow", "trackio", "tensorboard"])
def test_a_missing_library_names_the_extra_to_install(backend, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, backend, None)  # what an uninstalled package looks like to an import
    with pytest.raises(UserError) as e:
        require_backends([backend])
    assert e.value.where == "train.report_to" and f"pip install 'r1lab[{backend}]'" in e.value.fix


def test_an_sft_run_logs_its_resolved_config_and_metrics_to_mlflow(tmp_path, tiny_model_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from r1lab.config import SFTConfig, validate
    from r1lab.stages.sft import run_sft

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data.jsonl"
    rows = [{"prompt": f"{a} + 1 =", "completion": f" {a + 1}"} for a in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    cfg = validate(
        SFTConfig,
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"path": str(data), "max_length": 32},
            "train": {"output_dir": str(out), "batch_size": 4, "max_steps": 2, "report_to": ["mlflow"]},
        },
    )
    run_sft(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("r1lab").experiment_id])
    params = run.data.params
    assert params["train.max_steps"] == "2" and params["data.path"] == str(data)
    assert params["optim.lr"] == str(cfg.optim.lr) and params["model.dtype"] == "float32"  # defaults too
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"])) for r in logged]


def test_mlflow_uses_the_tracking_uri_the_user_set(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'shared' / 'team.db'}"
    (tmp_path / "shared").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team")
    log_run(tmp_path / "stage", "mlflow")
    assert not (tmp_path / "stage" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    assert run.data.metrics == {"loss": 1.5, "reward/mean": 0.5}  # the latest value of each
