"""Data: read records, recognise their format, template and mask them, pack and collate batches.

The stages use: `read_records`, `build_sft_dataset`, `collate`, `pack` and `build_prompt_dataset`.
"""

from r1lab.data.formats import Conversation, Preference, normalise, resolve_schema
from r1lab.data.packing import block_causal_mask, collate, pack
from r1lab.data.prompts import PromptDataset, PromptExample, build_prompt_dataset
from r1lab.data.readers import load_hub, read_records
from r1lab.data.sft import SFTDataset, build_sft_dataset
from r1lab.data.tokenize import IGNORE, tokenize_conversation, tokenize_prompt

__all__ = [
    "IGNORE",
    "Conversation",
    "Preference",
    "PromptDataset",
    "PromptExample",
    "SFTDataset",
    "block_causal_mask",
    "build_prompt_dataset",
    "build_sft_dataset",
    "collate",
    "load_hub",
    "normalise",
    "pack",
    "read_records",
    "resolve_schema",
    "tokenize_conversation",
    "tokenize_prompt",
]
