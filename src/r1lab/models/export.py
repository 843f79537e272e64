"""Export a model out of r1lab: a plain HF folder (LoRA merged, with a model card) or a GGUF file for llama.cpp.

GGUF goes through llama.cpp's own converter (convert_hf_to_gguf.py), not a writer of ours on the `gguf` package:
the converter is the reference for tensor names, the q/k rotary permutation, tokenizer pre-types, special
tokens and the chat template of ~280 architectures, and it is what llama.cpp's users trust. It is a script, not
a package: the sdist of llama-cpp-python on PyPI ships it (vendor/llama.cpp), so r1lab fetches that once into
its cache, or uses a llama.cpp checkout named by $R1LAB_LLAMA_CPP. The converter writes f32, f16 and q8_0;
q4_k_m is made from the f16 file by llama.cpp's quantizer, which needs llama-cpp-python installed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

from r1lab.config import ModelConfig
from r1lab.errors import UserError
from r1lab.models.cache import _replace_dir, r1lab_home, resolve_model_path
from r1lab.models.load import _adapter_config, load_model, save_model

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"  # its sdist's vendor/llama.cpp holds the converter
# --quant name -> the converter's --outtype; None: convert to f16, then llama.cpp's quantizer (llama-cpp-python)
QUANTS: dict[str, str | None] = {"f32": "f32", "f16": "f16", "q8_0": "q8_0", "q4_k_m": None}
TARGETS = ("gguf", "hf")
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")


def export_model(spec: str, to: str, out: Path | None = None, quant: str = "f16") -> Path:
    """Write model `spec` (name, folder, LoRA adapter, .gguf, hub id) as `to` ("gguf" or "hf"); returns the path."""
    if to not in TARGETS:
        raise UserError(
            f"unknown export format {to!r}", where="--to", fix=f"use one of: {', '.join(TARGETS)}"
        )
    if to == "hf":
        return export_hf(spec, out or Path(f"{_stem(spec)}-hf"))
    return export_gguf(spec, out or Path(f"{_stem(spec)}.{quant}.gguf"), quant)


def _stem(spec: str) -> str:
    path = Path(spec)
    parts = [p for p in path.parts if p not in ("final", "merged", "/")]
    return (parts[-1] if parts else "model").removesuffix(".gguf")


# ---------------------------------------------------------------------------------------------- hf


def export_hf(spec: str, out: Path) -> Path:
    """A plain folder `from_pretrained` loads: LoRA adapters merged, the stored dtype kept, a README.md card."""
    model, tokenizer = load_model(ModelConfig(path=spec, dtype="auto"), trainable=False)
    save_model(model, tokenizer, out)
    (out / "README.md").write_text(model_card(spec, Path(resolve_model_path(spec))))
    return out


def model_card(spec: str, path: Path) -> str:
    """What the model is and, for a model inside an r1lab run folder, the stage config, recipe and results."""
    lines = ["---", "library_name: transformers", "tags: [r1lab]", "---", "", f"# {_stem(spec)}", ""]
    adapter = _adapter_config(path)
    lines.append(
        f"Exported by r1lab from `{spec}`" + (" (a LoRA adapter, merged into its base)." if adapter else ".")
    )
    if adapter:
        lines.append(f"Base model: `{adapter.get('base_model_name_or_path')}`.")
    ancestors = [path, *list(path.resolve().parents)[:4]]
    stage = next((d / "config.yaml" for d in ancestors if (d / "config.yaml").is_file()), None)
    root = next((d for d in ancestors if (d / "recipe.yaml").is_file()), None)
    sections = [("Training stage config", stage, "yaml")]
    if root is not None:
        sections += [("Recipe", root / "recipe.yaml", "yaml"), ("Results", root / "results.md", None)]
    for title, file, fence in sections:
        if file is None or not file.is_file():
            continue
        body = file.read_text().strip()
        lines += ["", f"## {title}", "", f"From `{file}`:", ""]
        lines += [f"```{fence}", body, "```"] if fence else [body]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- gguf


def export_gguf(spec: str, out: Path, quant: str = "f16") -> Path:
    """Convert through llama.cpp's convert_hf_to_gguf.py (quantising with llama.cpp for q4_k_m)."""
    if quant not in QUANTS:
        raise UserError(
            f"unknown GGUF quantisation {quant!r}", where="--quant", fix=f"use one of: {', '.join(QUANTS)}"
        )
    if QUANTS[quant] is None:
        _llama_cpp("--quant " + quant)  # fail before the slow part
    if importlib.util.find_spec("sentencepiece") is None:  # the converter imports it for every Llama
        raise UserError(
            "llama.cpp's GGUF converter needs the sentencepiece package", fix="pip install 'r1lab[export]'"
        )
    converter = llama_cpp_converter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".r1lab-export-", dir=out.parent) as work:
        folder = Path(resolve_model_path(spec))
        if not (folder / "config.json").is_file():  # a LoRA adapter (or anything not plain): merge first
            folder = export_hf(spec, Path(work) / "merged")
        check_architecture(folder, converter)
        tmp = Path(work) / out.name
        f16 = Path(work) / "f16.gguf"
        _convert(converter, folder, f16 if QUANTS[quant] is None else tmp, QUANTS[quant] or "f16")
        if QUANTS[quant] is None:
            quantize(f16, tmp, quant)
        tmp.replace(out)
    return out


def supported_architectures(converter: Path) -> list[str]:
    """The HF architectures llama.cpp's converter registers (`@ModelBase.register(...)`), read without importing."""
    names: set[str] = set()
    for file in sorted((converter / "conversion").glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            func = getattr(node, "func", None)
            if (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and func.attr == "register"
                and getattr(func.value, "id", None) == "ModelBase"
            ):
                names |= {
                    a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                }
    return sorted(names)


def check_architecture(folder: Path, converter: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    archs = config.get("architectures") or [config.get("model_type", "?")]
    supported = supported_architectures(converter)
    if archs[0] not in supported:
        raise UserError(
            f"llama.cpp's converter cannot convert architecture {archs[0]} (model {folder})",
            where=str(folder / "config.json"),
            fix="export with --to hf instead, or use a model of an architecture llama.cpp supports: "
            + ", ".join(supported),
        )


def _convert(converter: Path, folder: Path, out: Path, outtype: str) -> None:
    runner = Path(__file__).with_name("llama_convert.py")
    cmd = [
        sys.executable,
        str(runner),
        str(converter),
        str(folder),
        "--outfile",
        str(out),
        "--outtype",
        outtype,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 or not out.is_file():
        tail = "\n".join((run.stderr + run.stdout).strip().splitlines()[-8:])
        raise UserError(
            f"llama.cpp's converter failed on {folder}:\n{tail}",
            fix="read the converter's message above; `--to hf` exports without it",
        )
    for line in run.stderr.splitlines():
        if line.startswith("r1lab:"):
            print(line, file=sys.stderr)


def quantize(src: Path, dst: Path, quant: str) -> None:
    """llama.cpp's own quantizer (llama_model_quantize, through llama-cpp-python's bindings)."""
    import ctypes

    llama_cpp = _llama_cpp("--quant " + quant)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise UserError(f"llama.cpp could not quantise {src} to {quant} (code {rc})", fix="use --quant q8_0")


def _llama_cpp(what: str):
    try:
        import llama_cpp
    except ImportError:
        raise UserError(
            f"{what} needs llama.cpp's quantizer, which llama-cpp-python provides",
            fix="pip install 'r1lab[llamacpp]' (it compiles llama.cpp: minutes), or use --quant q8_0 or f16",
        ) from None
    return llama_cpp


def llama_cpp_converter() -> Path:
    """A folder holding convert_hf_to_gguf.py, conversion/ and gguf-py/: $R1LAB_LLAMA_CPP, or fetched once."""
    named = os.environ.get("R1LAB_LLAMA_CPP")
    if named:
        folder = Path(named).expanduser()
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise UserError(
                f"$R1LAB_LLAMA_CPP={named} holds no convert_hf_to_gguf.py",
                fix="point it at a llama.cpp checkout, or unset it to let r1lab fetch the converter",
            )
        return folder
    folder = r1lab_home() / "tools" / LLAMA_CPP_PYTHON.replace("==", "-")
    if not (folder / ".complete").is_file():
        fetch_converter(folder)
    return folder


def fetch_converter(folder: Path) -> Path:
    """`pip download` the llama-cpp-python sdist and keep llama.cpp's converter files from it in `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory() as work:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-input"]
            run = subprocess.run([*cmd, "-q", LLAMA_CPP_PYTHON, "-d", work], capture_output=True, text=True)
            sdists = sorted(Path(work).glob("*.tar.gz"))
            if run.returncode != 0 or not sdists:
                tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-5:])
                raise UserError(
                    f"could not download {LLAMA_CPP_PYTHON} (it ships llama.cpp's GGUF converter):\n{tail}",
                    fix="check the connection to PyPI, or set $R1LAB_LLAMA_CPP to a llama.cpp checkout",
                )
            _extract_converter(sdists[0], tmp)
        (tmp / ".complete").write_text(LLAMA_CPP_PYTHON + "\n")
        _replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _extract_converter(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            _, _, inner = member.name.partition("/vendor/llama.cpp/")
            if not member.isfile() or not inner.startswith(CONVERTER_FILES) or ".." in Path(inner).parts:
                continue
            target = dest / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, target.open("wb") as dst:  # type: ignore[union-attr]
                shutil.copyfileobj(src, dst)
