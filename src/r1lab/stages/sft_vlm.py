"""What the SFT stage does differently for a vision-language model (stages/sft.py keeps the one loop).

A run is a vision one when `model.path` holds an image-text model (its config.json, through models/vlm.py);
its rows may carry images or not. Then the model and processor load with `load_vlm` (`model.freeze` picks the
parts that train: by default the language model only; `[vision_tower, language_model]` trains the projector
alone, LLaVA's stage-1 alignment), rows are read with their images and tokenised by the processor
(data/images.py: labels on the assistant tokens only, prompt and image tokens -100), batches are
`collate_images` (no packing), and every checkpoint and `final/` hold the processor (image processor,
tokenizer, chat template), so the folder loads again with `load_vlm`.

A text model given rows with images is refused before it loads (the images would be dropped silently), and so
are packing and hft with a VLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from r1lab.config import SFTConfig
from r1lab.data.images import (
    ImageRecords,
    ImageSFTDataset,
    build_image_sft_dataset,
    collate_images,
    find_image_row,
    read_image_sft_data,
)
from r1lab.errors import UserError
from r1lab.models.vlm import image_text_base, load_vlm


@dataclass
class VisionSFT:
    cfg: SFTConfig
    read: ImageRecords  # the rows with their images opened (and the held-out part)
    processor: Any = field(default=None)  # set by `load`; what checkpoints save beside the weights

    def load(self) -> tuple[Any, Any]:
        """The trainable model and the processor's tokenizer."""
        model, self.processor = load_vlm(self.cfg.model, trainable=True)
        return model, getattr(self.processor, "tokenizer", self.processor)

    def dataset(self) -> ImageSFTDataset:
        dataset = build_image_sft_dataset(self.cfg.data, self.processor, read=self.read)
        if len(dataset) == 0:
            stats = dataset.stats
            raise UserError(
                f"no training example left in {self.read.source}: {stats['total']} records, "
                f"{stats['skipped_no_assistant']} without an assistant turn, {stats['dropped']} dropped as "
                f"longer than max_length {self.cfg.data.max_length} (a row is cut only after its last image)",
                where="data.path / data.max_length",
                fix="check that rows have assistant turns (or completions), or raise data.max_length",
            )
        return dataset

    def collate(self, examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
        return collate_images(examples, pad_token_id, packing=self.cfg.packing)


def vision_sft(cfg: SFTConfig, *, seed: int) -> VisionSFT | None:
    """The vision side of this SFT run, its data read; None for a text model on text rows."""
    if image_text_base(cfg.model) is None:
        where = find_image_row(cfg.data)
        if where is not None:
            raise UserError(
                f"the data has rows with images, but model.path {cfg.model.path} is a text-only model",
                where=where,
                fix=f"compose a vision-language model from it: `r1lab models compose --llm {cfg.model.path} "
                "--vision small-vit --out models/vlm` and set model.path to models/vlm (or drop the images)",
            )
        return None
    if cfg.packing:
        raise UserError(
            "packing is not supported for a vision-language model (each example's pixel values and image "
            "positions would have to be split per packed sequence)",
            where="packing",
            fix="set packing: false",
        )
    if cfg.hft is not None:  # its plan draws over every matrix, the vision tower's too, against model.freeze
        raise UserError(
            "hft is not supported for a vision-language model",
            where="hft",
            fix="remove hft, and choose what trains with model.freeze (vision_tower, projector, language_model)",
        )
    return VisionSFT(cfg, read_image_sft_data(cfg.data, seed=seed))
