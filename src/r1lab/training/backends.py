"""The experiment trackers behind `train.report_to`, each through its own library (an optional extra).

Every backend gets the resolved config once (as its run config / params) and then numeric metrics per step:

- tensorboard: event files in `<output_dir>/tensorboard/`; the config as a text summary named "config".
- wandb: `wandb.init(dir=<output_dir>)`, offline unless WANDB_MODE says otherwise (`wandb sync` uploads it
  later); project from WANDB_PROJECT (default "r1lab").
- mlflow: a SQLite store `<output_dir>/mlflow.db` unless MLFLOW_TRACKING_URI is set; experiment from
  MLFLOW_EXPERIMENT_NAME (default "r1lab"); the config flattened to dotted params.
- trackio: trackio's own local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio); project from
  TRACKIO_PROJECT (default "r1lab").

The run is named `<parent folder>/<stage folder>` of the output dir (e.g. "quickstart/sft").
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from r1lab.errors import UserError

# backend -> the modules it imports (the extra of the same name installs them)
_MODULES = {
    "tensorboard": ("tensorboard",),
    "wandb": ("wandb",),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),
    "trackio": ("trackio",),
}


class Backend(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def require_backends(report_to: list[str]) -> None:
    """Fail fast (before any model loads) when a `report_to` backend's library is not installed."""
    for name in report_to:
        missing = [m for m in _MODULES[name] if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(
                f"report_to: {name} needs the {' and '.join(missing)} package(s), which are not installed",
                where="train.report_to",
                fix=f"pip install 'r1lab[{name}]' (or remove {name!r} from train.report_to)",
            )


def open_backend(name: str, output_dir: Path, config: dict[str, Any] | None, *, resumed: bool) -> Backend:
    """Start `name`'s run for this stage (`resumed`: trackio continues its run of the same name)."""
    require_backends([name])
    run_name = f"{output_dir.resolve().parent.name}/{output_dir.name}"
    return _BACKENDS[name](output_dir, run_name, config or {}, resumed)


class _TensorBoard:
    def __init__(self, out: Path, name: str, config: dict[str, Any], resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        if config:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, out: Path, name: str, config: dict[str, Any], resumed: bool) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "r1lab"),
            name=name,
            dir=str(out),
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            settings=wandb.Settings(console="off"),  # leave stdout/stderr (the progress bar) alone
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # finish() returns before wandb's service has flushed the run file; this waits


class _MLflow:
    def __init__(self, out: Path, name: str, config: dict[str, Any], resumed: bool) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "r1lab")
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            local = None if os.environ.get("MLFLOW_TRACKING_URI") else (out / "mlruns").resolve().as_uri()
            experiment_id = self.client.create_experiment(experiment, artifact_location=local)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _Trackio:
    def __init__(self, out: Path, name: str, config: dict[str, Any], resumed: bool) -> None:
        import trackio

        self.run = trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "r1lab"),
            name=name,
            config=config,
            resume="allow" if resumed else "never",
            auto_log_gpu=False,
            auto_log_cpu=False,
            embed=False,
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


_BACKENDS: dict[str, type] = {
    "tensorboard": _TensorBoard,
    "wandb": _WandB,
    "mlflow": _MLflow,
    "trackio": _Trackio,
}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
