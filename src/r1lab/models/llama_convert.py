"""Run llama.cpp's own convert_hf_to_gguf.py as a script: `python llama_convert.py LLAMA_CPP_DIR MODEL_DIR ARGS...`.

One addition, only where llama.cpp would stop: a BPE tokenizer whose pre-tokenizer hash llama.cpp does not know
(every freshly trained tokenizer, e.g. the tests' tiny one) but whose tokenizer.json pre-tokenizer is exactly
GPT-2's (ByteLevel with its regex, no normaliser) is written as llama.cpp's "gpt-2" pre-tokenizer, which applies
the same regex. Anything else keeps llama.cpp's own error. This file imports nothing from r1lab: it runs in a
subprocess next to llama.cpp's `conversion` package and `gguf-py`.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path


def gpt2_pre_tokenizer(model_dir: Path) -> str | None:
    """'gpt-2' when tokenizer.json splits text exactly as GPT-2 does, else None."""
    file = model_dir / "tokenizer.json"
    if not file.is_file():
        return None
    spec = json.loads(file.read_text())
    pre = spec.get("pre_tokenizer") or {}
    plain = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
    return "gpt-2" if plain and spec.get("normalizer") is None else None


def main(argv: list[str]) -> None:
    llama_dir, model_dir = Path(argv[0]), Path(argv[1])
    sys.path[:0] = [str(llama_dir), str(llama_dir / "gguf-py")]
    from conversion import base  # llama.cpp's converter package

    fallback = gpt2_pre_tokenizer(model_dir)
    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if fallback is None:
                raise
            print(
                f"r1lab: llama.cpp does not know this tokenizer's hash; its pre-tokenizer is GPT-2's, "
                f"written as {fallback!r}",
                file=sys.stderr,
            )
            return fallback

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    script = llama_dir / "convert_hf_to_gguf.py"
    sys.argv = [str(script), *argv[1:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
