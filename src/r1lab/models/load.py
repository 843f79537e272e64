"""Loading (dtype check, attention, gradient checkpointing, LoRA), atomic saving and inspection of models."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1lab.config import LoraConfig, ModelConfig
from r1lab.errors import UserError
from r1lab.models.cache import _replace_dir, resolve_model_path
from r1lab.models.vlm import is_image_text_model

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_tokenizer(cfg: ModelConfig, *, path: str | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (eos if it has none) and `cfg.chat_template` applied.

    `path`: an already resolved `resolve_model_path(cfg.path)`, to skip resolving twice."""
    from transformers import AutoTokenizer

    path = path or resolve_model_path(cfg.path, cfg.revision)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if cfg.chat_template:
        tokenizer.chat_template = _read_template(cfg.chat_template)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None and tokenizer.unk_token is None:
            raise UserError(
                f"the tokenizer of {path} has no pad, eos or unk token to pad with",
                where="model.path",
                fix="use a tokenizer that defines an eos token (its tokenizer_config.json `eos_token`)",
            )
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _read_template(value: str) -> str:
    if "{{" in value or "{%" in value:
        return value
    file = Path(value).expanduser()
    if file.is_file():
        return file.read_text()
    raise UserError(
        f"chat_template {value!r} is neither a Jinja template nor an existing file",
        where="model.chat_template",
        fix="give a Jinja string (with {{ }} / {% %}) or the path of a .jinja file",
    )


def load_model(
    cfg: ModelConfig, *, trainable: bool = True, calibrate: Calibrate | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer as `cfg` says. trainable=False: eval mode, no grads, no LoRA/checkpointing.

    A LoRA adapter folder (from `save_model` without merge) is merged into its base on load; a fresh
    LoRA from `cfg.lora` then goes on top, so stages stack. `calibrate(model, tokenizer)` runs the model on
    calibration data; `lora.init: corda` needs it."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(cfg.path, cfg.revision)
    tokenizer = load_tokenizer(cfg, path=path)
    adapter = _adapter_config(Path(path))
    base = resolve_model_path(adapter["base_model_name_or_path"]) if adapter else path
    if is_image_text_model(base):  # a VLM: its transformers class, LoRA on the language model only
        from r1lab.models.vlm import load_vlm_model

        return load_vlm_model(cfg, trainable=trainable), tokenizer
    if cfg.freeze is not None:
        raise UserError(
            f"model.freeze {cfg.freeze} names parts of a vision-language model, but {base} is a text-only model",
            where="model.freeze",
            fix="remove model.freeze, or give a vision-language model (`r1lab models compose`)",
        )
    kwargs: dict[str, Any] = {
        "dtype": _resolve_dtype(cfg.dtype, Path(base)),
        "trust_remote_code": cfg.trust_remote_code,
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (ImportError, ValueError) as e:
        key = "model.trust_remote_code" if "trust_remote_code" in str(e) else None
        if (
            key is None
            and cfg.attn_implementation
            and ("attn" in str(e).lower() or isinstance(e, ImportError))
        ):
            key = "model.attn_implementation"
        if key is None:
            raise
        raise UserError(f"cannot load {base}: {e}", where=key, fix=f"change or remove `{key}`") from None
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    for role in ("pad", "eos"):  # generate() needs them; take the tokenizer's when the config has none
        if getattr(model.generation_config, f"{role}_token_id", None) is None:
            setattr(model.generation_config, f"{role}_token_id", getattr(tokenizer, f"{role}_token_id"))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if not trainable:
        model.eval()
        model.requires_grad_(False)
        return model, tokenizer
    model.train()
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen embeddings (LoRA) without enable_input_require_grads.
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        run = None if calibrate is None else lambda: calibrate(model, tokenizer)
        model = _wrap_lora(model, cfg.lora, run)
    return model, tokenizer


def _adapter_config(path: Path) -> dict[str, Any] | None:
    if (path / "config.json").is_file() or not (path / "adapter_config.json").is_file():
        return None
    return json.loads((path / "adapter_config.json").read_text())


def _resolve_dtype(name: str, path: Path) -> torch.dtype:
    """The torch dtype for `name` on this machine; "auto" = the checkpoint's, if the hardware runs it."""
    import torch

    cuda = torch.cuda.is_available()
    gpu = cuda or torch.backends.mps.is_available()
    supported = {"float32": True, "bfloat16": not cuda or torch.cuda.is_bf16_supported(), "float16": gpu}
    if name == "auto":
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        stored = config.get("dtype") or config.get("torch_dtype") or "float32"
        return getattr(torch, stored) if supported.get(stored) else torch.float32
    if not supported[name]:
        hardware = "this GPU (no bfloat16 support)" if gpu else "CPU (float16 needs a GPU)"
        fix = "use float16 or float32" if gpu else "use float32 (or bfloat16) on CPU"
        raise UserError(f"dtype {name} is not supported on {hardware}", where="model.dtype", fix=fix)
    return getattr(torch, name)


Calibrate = Callable[["PreTrainedModel", "PreTrainedTokenizerBase"], None]
# lora.init -> peft's init_lora_weights; the last three move the adapter's initial product out of the base
# weights (W_res = W - B0 A0), so base + adapter equals the original model at step 0
LORA_INITS: dict[str, bool | str] = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "olora": "olora",
    "corda": "corda",
}
RESIDUAL_INITS = ("pissa", "olora", "corda")
INITIAL_ADAPTER = "_r1lab_initial_adapter"  # attribute: the adapter at step 0 of a residual init
RESIDUAL_ADAPTER_FILE = "adapter_residual.safetensors"  # the trained adapter over the residual base (resume)


def _wrap_lora(
    model: PreTrainedModel,
    lora: LoraConfig,
    run_model: Callable[[], None] | None = None,
    task_type: str = "CAUSAL_LM",  # SEQ_CLS: peft also trains the score head (modules_to_save)
) -> PreTrainedModel:
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, get_peft_model_state_dict

    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
        init_lora_weights=LORA_INITS[lora.init],
    )
    try:
        if lora.init == "corda":
            _corda_preprocess(model, config, run_model)
        wrapped = get_peft_model(model, config)
        if lora.init in RESIDUAL_INITS:
            initial = get_peft_model_state_dict(wrapped)
            setattr(wrapped, INITIAL_ADAPTER, {k: v.detach().clone() for k, v in initial.items()})
        return wrapped
    except ValueError as e:
        names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        raise UserError(
            f"LoRA cannot wrap this model: {e}",
            where="model.lora.target_modules",
            fix=f"use 'all-linear' or some of: {', '.join(sorted(names - {'lm_head'}))}",
        ) from None


def _corda_preprocess(model: PreTrainedModel, config: Any, run_model: Callable[[], None] | None) -> None:
    import torch
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    if run_model is None:
        raise UserError(
            "lora.init corda builds the adapter from activations on calibration data, which only the SFT "
            "stage provides (its first training examples)",
            where="model.lora.init",
            fix="use pissa or olora here (no data needed), or initialise with corda in an SFT stage",
        )
    config.corda_config = CordaConfig(corda_method="ipm")  # instruction-previewed: the paper's for adapting
    if config.target_modules == "all-linear":  # preprocess_corda matches names only: spell out all-linear
        head = model.get_output_embeddings()
        config.target_modules = {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        }
    preprocess_corda(model, config, run_model=run_model)
    model.train()  # preprocess_corda leaves the model in eval mode


# ---------------------------------------------------------------------------------------------- saving


def save_model(
    model: Any, tokenizer: PreTrainedTokenizerBase, out_dir: Path, *, merge_lora: bool = False
) -> Path:
    """Write `model` + tokenizer to `out_dir` atomically (temp sibling, then rename) as safetensors.

    A full model gives a folder plain `AutoModelForCausalLM.from_pretrained` loads. A peft model gives the
    adapter (which `load_model` also loads) and, with `merge_lora`, a merged full model in `out_dir/merged`.
    Returns the folder a next stage should load. Call it on one process only (rank 0)."""
    from peft import PeftModel

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model)
    is_peft = isinstance(model, PeftModel)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if is_peft and hasattr(model, INITIAL_ADAPTER):
            _save_residual_adapter(model, tmp)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if is_peft and merge_lora:
            _save_merged(model, tokenizer, tmp / "merged")
        _match_umask(tmp)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "merged" if is_peft and merge_lora else out_dir


def _save_residual_adapter(model: Any, out: Path) -> None:
    """A pissa/olora/corda adapter trains over modified base weights, so the adapter alone would be wrong on
    the original base: write it as peft converts it (rank 2r, delta = B A - B0 A0, a plain LoRA over the
    original base, which `load_model` merges), and the trained adapter itself for resume."""
    import tempfile

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        initial = Path(tmp) / "initial"
        initial.mkdir()
        save_file(getattr(model, INITIAL_ADAPTER), str(initial / "adapter_model.safetensors"))
        model.save_pretrained(out, path_initial_model_for_weight_conversion=str(initial))
    trained = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(trained, str(out / RESIDUAL_ADAPTER_FILE))


def _match_umask(folder: Path) -> None:
    """Give every file the mode the umask gives a new file (safetensors writes its files 0600, so a model
    shared through a group-readable folder would be unreadable to the group while its config is not)."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for file in folder.rglob("*"):
        if file.is_file() and file.stat().st_mode & 0o777 != mode:
            file.chmod(mode)


def _unwrap(model: Any) -> Any:
    """The model inside DDP / DataParallel / torch.compile wrappers."""
    import torch

    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _save_merged(model: Any, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save base + LoRA delta as a plain model without touching `model` (no merge/unmerge drift, no copy)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapter = model.active_adapter
    state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            weight = module.get_base_layer().weight.detach()
            state[f"{name}.weight"] = (
                weight + module.get_delta_weight(adapter).to(weight.dtype)
            ).contiguous()
    base.save_pretrained(out, state_dict=state)
    tokenizer.save_pretrained(out)


# ---------------------------------------------------------------------------------------------- info


def model_info(spec: str) -> dict[str, Any]:
    """Architecture, parameter count, vocab size, dtype, chat template and path of a model, without loading it."""
    from transformers import AutoConfig, AutoTokenizer

    path = Path(resolve_model_path(spec))
    adapter = _adapter_config(path)
    base = Path(resolve_model_path(adapter["base_model_name_or_path"])) if adapter else path
    config = AutoConfig.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    params, dtypes = _safetensors_summary(base)
    info: dict[str, Any] = {
        "path": str(path),
        "architecture": (config.architectures or [config.model_type])[0],
        "parameters": params,
        "parameters_human": f"{params / 1e6:.1f}M" if params < 1e9 else f"{params / 1e9:.2f}B",
        "dtype": dtypes.most_common(1)[0][0] if dtypes else str(getattr(config, "dtype", None)),
        "vocab_size": config.vocab_size,
        "layers": getattr(config, "num_hidden_layers", None),
        "context_length": getattr(config, "max_position_embeddings", None),
        "tied_embeddings": getattr(config, "tie_word_embeddings", None),
        "chat_template": bool(tokenizer.chat_template),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
    }
    if adapter:
        info["lora"] = {
            k: adapter.get(k) for k in ("base_model_name_or_path", "r", "lora_alpha", "target_modules")
        }
    return info


SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def _safetensors_summary(folder: Path) -> tuple[int, Counter[str]]:
    """Parameter count and dtype histogram (by tensor count) read from safetensors headers only."""
    import math

    from safetensors import safe_open

    total, dtypes = 0, Counter()
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118  (safe_open is not a dict)
                piece = f.get_slice(key)
                total += math.prod(piece.get_shape())
                dtypes[SAFETENSORS_DTYPES.get(piece.get_dtype(), piece.get_dtype())] += 1
    return total, dtypes
