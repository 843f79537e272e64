"""`kind: export` in a recipe: write the model the step is given as GGUF or a plain HF folder, into its stage folder."""

from __future__ import annotations

from pathlib import Path

from r1lab.config import ExportConfig
from r1lab.models.export import export_model


def run_export(cfg: ExportConfig) -> Path:
    """The exported file (GGUF) or folder (HF); an earlier partial export is replaced."""
    out = Path(cfg.output)
    target = out / "hf" if cfg.to == "hf" else out / f"model.{cfg.quant}.gguf"
    return export_model(cfg.model, cfg.to, target, cfg.quant)
