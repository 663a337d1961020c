"""GGUF from a Hugging Face folder: the HF->GGUF writer and the merged export from an HF base.

The written files are read back by the project's own GGUF loader (which undoes llama.cpp's
q/k permutation independently) and must compute what PyTorch computes; the llama.cpp tier
(tests/llama) runs the same files in llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from senior_intern.adapters.gguf import llama_qk_permute
from senior_intern.adapters.gguf_hf import HfGgufError, write_hf_gguf
from senior_intern.adapters.gguf_merge import export_merged_gguf
from senior_intern.models import load_base_model
from tests.adapters.conftest import ALL_PROJECTIONS, save_peft_adapter
from tests.conftest import make_tiny_llama

IDS = [1, 40, 77, 123, 9, 250, 31, 2]


def _tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape.tolist())])
            for t in reader.tensors}


def test_merged_gguf_from_hf_folder_computes_the_peft_model(tiny_base_dir: Path, tmp_path: Path, tiny_tokenizer) -> None:
    peft_model = save_peft_adapter(make_tiny_llama(), tmp_path / "adapter", target_modules=list(ALL_PROJECTIONS))
    with torch.no_grad():
        want = peft_model(torch.tensor([IDS])).logits[0]
    seen: list[tuple[int, int]] = []
    result = export_merged_gguf(tmp_path / "adapter", tiny_base_dir, tmp_path / "merged.gguf",
                                on_progress=lambda d, t, n: seen.append((d, t)))
    assert result.path.is_file() and not list(tmp_path.glob(".*.partial"))
    assert len(result.merged) == 14 and set(result.merged.values()) == {"F32"}  # config.json says float32
    assert seen[-1][0] == len(gguf.GGUFReader(result.path).tensors)
    loaded = load_base_model(result.path, dtype="float32")
    with torch.no_grad():
        got = loaded.model(torch.tensor([IDS])).logits[0]
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    text = "def add(a, b):\n    return a + b"
    assert loaded.tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]

    q8 = export_merged_gguf(tmp_path / "adapter", tiny_base_dir, tmp_path / "q8.gguf", qtype="q8_0")
    assert set(q8.merged.values()) == {"Q8_0"}
    with pytest.raises(FileExistsError, match="--force"):
        export_merged_gguf(tmp_path / "adapter", tiny_base_dir, tmp_path / "q8.gguf")


def test_only_llama_q_k_rows_are_permuted(tmp_path: Path) -> None:
    import transformers

    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)
    models = {"llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)),
              "qwen2": transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))}
    tokenizer_gguf = tmp_path / "tok.gguf"
    writer = gguf.GGUFWriter(tokenizer_gguf, "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(64)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    for family, model in models.items():
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        out = tmp_path / f"{family}.gguf"
        write_hf_gguf(out, model.config.to_dict(), state, matrix_type="f32", tokenizer_from=tokenizer_gguf)
        tensors = _tensors(out)
        q, k = state["model.layers.0.self_attn.q_proj.weight"], state["model.layers.0.self_attn.k_proj.weight"]
        if family == "llama":
            assert np.array_equal(tensors["blk.0.attn_q.weight"], llama_qk_permute(q, 4))
            assert np.array_equal(tensors["blk.0.attn_k.weight"], llama_qk_permute(k, 2))
        else:
            assert np.array_equal(tensors["blk.0.attn_q.weight"], q)
            assert np.array_equal(tensors["blk.0.attn_k.weight"], k)
            assert np.array_equal(tensors["blk.0.attn_q.bias"], state["model.layers.0.self_attn.q_proj.bias"])
        assert np.array_equal(tensors["output.weight"], state["lm_head.weight"])


def test_refusals_name_the_reason(tiny_base_dir: Path, tmp_path: Path) -> None:
    tied = tmp_path / "tied"
    make_tiny_llama(tie_word_embeddings=True).save_pretrained(tied)
    save_peft_adapter(make_tiny_llama(tie_word_embeddings=True), tmp_path / "head", target_modules=["q_proj", "lm_head"],
                      save_embedding_layers=False)
    with pytest.raises(ValueError, match="'lm_head' is tied to the token embeddings"):
        export_merged_gguf(tmp_path / "head", tied, tmp_path / "t.gguf")
    assert not (tmp_path / "t.gguf").exists()
    config = json.loads((tiny_base_dir / "config.json").read_text())
    state = {"model.embed_tokens.weight": np.zeros((300, 64), np.float32)}
    with pytest.raises(HfGgufError, match="rope_scaling"):
        write_hf_gguf(tmp_path / "a.gguf", {**config, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, state,
                      hf_folder=tiny_base_dir)
    with pytest.raises(HfGgufError, match="model_type 'gemma2'"):
        write_hf_gguf(tmp_path / "a.gguf", {**config, "model_type": "gemma2"}, state, hf_folder=tiny_base_dir)
    with pytest.raises(HfGgufError, match="type must be one of"):
        write_hf_gguf(tmp_path / "a.gguf", config, state, matrix_type="q6_k", hf_folder=tiny_base_dir)
    spm = tmp_path / "spm"
    spm.mkdir()
    (spm / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram"}, "pre_tokenizer": {"type": "Metaspace"}}))
    with pytest.raises(HfGgufError, match=r"tokenizer.json: only GPT-2 style byte-level BPE.*'Unigram'.*'Metaspace'"):
        write_hf_gguf(tmp_path / "a.gguf", config, state, hf_folder=spm)
    with pytest.raises(HfGgufError, match=r"tokenizer.json is missing"):
        write_hf_gguf(tmp_path / "a.gguf", config, state, hf_folder=tmp_path)
