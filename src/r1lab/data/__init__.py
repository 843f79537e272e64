"""Data: read records, recognise their format, template and mask them, pack and collate batches.

The stages use: `read_sft_data` / `read_prompt_data` (read and check the data before any model loads), then
`build_sft_dataset` / `build_prompt_dataset` (template and tokenise what was read), `collate` and `pack`.
"""

from r1lab.data.formats import Conversation, Preference, normalise, resolve_schema
from r1lab.data.jsonl import write_jsonl
from r1lab.data.packing import block_causal_mask, collate, pack
from r1lab.data.prompts import (
    PromptDataset,
    PromptExample,
    PromptRecords,
    build_prompt_dataset,
    read_prompt_data,
)
from r1lab.data.readers import load_hub, read_records
from r1lab.data.sft import SFTDataset, SFTRecords, build_sft_dataset, read_sft_data
from r1lab.data.tokenize import IGNORE, tokenize_conversation, tokenize_prompt

__all__ = [
    "IGNORE",
    "Conversation",
    "Preference",
    "PromptDataset",
    "PromptExample",
    "PromptRecords",
    "SFTDataset",
    "SFTRecords",
    "block_causal_mask",
    "build_prompt_dataset",
    "build_sft_dataset",
    "collate",
    "load_hub",
    "normalise",
    "pack",
    "read_prompt_data",
    "read_records",
    "read_sft_data",
    "resolve_schema",
    "tokenize_conversation",
    "tokenize_prompt",
    "write_jsonl",
]
