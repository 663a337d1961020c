"""GGUF adapter and merged exports per architecture: names, shapes, q/k permutation only for Llama, refusals.

Each base is a tiny GGUF written here with the ``gguf`` package (tensor names and shapes as
llama.cpp's converter writes them); each adapter is a PEFT-format folder with random A/B.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from senior_intern.adapters.gguf import export_gguf, llama_qk_permute, read_base_info
from senior_intern.adapters.gguf_merge import export_merged_gguf

HIDDEN, HEADS, KV_HEADS, FF, VOCAB, BLOCKS = 64, 4, 2, 128, 32, 2
HEAD_DIM = HIDDEN // HEADS
# GGUF tensor -> (HF module suffix, [out, in]) for the split-projection families.
SPLIT = {
    "attn_q": ("self_attn.q_proj", (HEADS * HEAD_DIM, HIDDEN)),
    "attn_k": ("self_attn.k_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
    "attn_v": ("self_attn.v_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
    "ffn_down": ("mlp.down_proj", (HIDDEN, FF)),
}
PHI3 = {
    "attn_qkv": ("self_attn.qkv_proj", ((HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN)),
    "ffn_up": ("mlp.gate_up_proj", (2 * FF, HIDDEN)),
}
ARCHS = {"llama": SPLIT, "qwen2": SPLIT, "qwen3": SPLIT, "gemma2": SPLIT, "gemma3": SPLIT, "phi3": PHI3}


def write_base(path: Path, arch: str, tensors: dict, tied: bool = True) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(BLOCKS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_embedding_length(HIDDEN)
    rng = np.random.default_rng(1)
    writer.add_tensor("token_embd.weight", rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32))
    if not tied:
        writer.add_tensor("output.weight", rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32))
    for block in range(BLOCKS):
        for name, (_, shape) in tensors.items():
            writer.add_tensor(f"blk.{block}.{name}.weight", rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_adapter(folder: Path, modules: dict[str, tuple[int, int]], r: int = 4, alpha: float = 8) -> dict:
    """A PEFT LoRA folder for ``{module: (out, in)}``; returns ``{module: (A, B)}`` as numpy."""
    torch.manual_seed(0)
    tensors, factors = {}, {}
    for module, (out, inp) in modules.items():
        a, b = torch.randn(r, inp) * 0.1, torch.randn(out, r) * 0.1
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
        factors[module] = (a.numpy(), b.numpy())
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules})}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return factors


def _modules(tensors: dict) -> dict[str, tuple[str, tuple[int, int]]]:
    return {f"model.layers.{b}.{hf}": (f"blk.{b}.{name}.weight", shape) for b in range(BLOCKS) for name, (hf, shape) in tensors.items()}


def _tensors(path: Path) -> dict:
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_adapter_and_merged_exports_per_architecture(tmp_path, arch):
    tensors = ARCHS[arch]
    base = write_base(tmp_path / "base.gguf", arch, tensors)
    modules = _modules(tensors)
    factors = write_adapter(tmp_path / "adapter", {m: shape for m, (_, shape) in modules.items()})
    adapter_file = _tensors(export_gguf(tmp_path / "adapter", base, tmp_path / "a.gguf", dtype="f32"))
    merged = _tensors(export_merged_gguf(tmp_path / "adapter", base, tmp_path / "m.gguf", qtype="f16").path)
    original = _tensors(base)
    for module, (name, _) in modules.items():
        a, b = factors[module]
        delta = 2.0 * b @ a  # alpha / r
        if arch == "llama" and ".attn_q." in name:
            b, delta = llama_qk_permute(b, HEADS), llama_qk_permute(delta, HEADS)
        elif arch == "llama" and ".attn_k." in name:
            b, delta = llama_qk_permute(b, KV_HEADS), llama_qk_permute(delta, KV_HEADS)
        np.testing.assert_array_equal(adapter_file[f"{name}.lora_a"], a)
        np.testing.assert_allclose(adapter_file[f"{name}.lora_b"], b, rtol=1e-6)
        np.testing.assert_allclose(merged[name], original[name] + delta, atol=5e-3)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma2", "gemma3"])
def test_only_llama_permutes_q_and_k(tmp_path, arch):
    """The same adapter on a Llama and on another family: only the Llama file's q/k B rows are reordered."""
    factors = write_adapter(tmp_path / "adapter", {"model.layers.0.self_attn.q_proj": SPLIT["attn_q"][1],
                                                   "model.layers.0.self_attn.k_proj": SPLIT["attn_k"][1]})
    files = {}
    for family in ("llama", arch):
        base = write_base(tmp_path / f"{family}.gguf", family, SPLIT)
        files[family] = _tensors(export_gguf(tmp_path / "adapter", base, tmp_path / f"{family}-a.gguf", dtype="f32"))
    for proj, name in (("q_proj", "attn_q"), ("k_proj", "attn_k")):
        b = factors[f"model.layers.0.self_attn.{proj}"][1]
        np.testing.assert_array_equal(files[arch][f"blk.0.{name}.weight.lora_b"], b)
        assert not np.array_equal(files["llama"][f"blk.0.{name}.weight.lora_b"], b)


def test_lm_head_is_an_output_pair_and_refused_when_tied(tmp_path):
    base = write_base(tmp_path / "untied.gguf", "qwen2", SPLIT, tied=False)
    factors = write_adapter(tmp_path / "adapter", {"lm_head": (VOCAB, HIDDEN)})
    written = _tensors(export_gguf(tmp_path / "adapter", base, tmp_path / "a.gguf", dtype="f32"))
    np.testing.assert_array_equal(written["output.weight.lora_a"], factors["lm_head"][0])
    merged = _tensors(export_merged_gguf(tmp_path / "adapter", base, tmp_path / "m.gguf", qtype="f16").path)
    a, b = factors["lm_head"]
    np.testing.assert_allclose(merged["output.weight"], _tensors(base)["output.weight"] + 2.0 * b @ a, atol=5e-3)
    tied = write_base(tmp_path / "tied.gguf", "qwen2", SPLIT)
    for export in (lambda o: export_gguf(tmp_path / "adapter", tied, o), lambda o: export_merged_gguf(tmp_path / "adapter", tied, o)):
        with pytest.raises(ValueError, match="tied to the token embeddings"):
            export(tmp_path / "x.gguf")


def test_embedding_lora_is_refused_with_the_reason(tmp_path):
    base = write_base(tmp_path / "base.gguf", "qwen2", SPLIT)
    folder = tmp_path / "adapter"
    write_adapter(folder, {"model.layers.0.self_attn.q_proj": SPLIT["attn_q"][1]})
    save_file({"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(4, VOCAB),
               "base_model.model.model.embed_tokens.lora_embedding_B": torch.zeros(HIDDEN, 4)},
              str(folder / "adapter_model.safetensors"))
    for export in (export_gguf, export_merged_gguf):
        with pytest.raises(ValueError, match="LoRA on embeddings is not supported"):
            export(folder, base, tmp_path / "x.gguf")


def test_unsupported_architecture_is_refused_with_the_list(tmp_path):
    base = write_base(tmp_path / "base.gguf", "falcon", SPLIT)
    write_adapter(tmp_path / "adapter", {"model.layers.0.self_attn.q_proj": SPLIT["attn_q"][1]})
    for export in (export_gguf, export_merged_gguf):
        with pytest.raises(ValueError, match=r"'falcon' is not supported .*phi3.*qwen3"):
            export(tmp_path / "adapter", base, tmp_path / "x.gguf")


@pytest.mark.parametrize("model_type, config_name, tensor", [
    ("qwen2", "Qwen2Config", "blk.0.attn_q.weight"), ("qwen3", "Qwen3Config", "blk.0.attn_q.weight"),
    ("gemma2", "Gemma2Config", "blk.0.attn_q.weight"), ("gemma3_text", "Gemma3TextConfig", "blk.0.attn_q.weight"),
    ("phi3", "Phi3Config", "blk.0.attn_qkv.weight"), ("mistral", "MistralConfig", "blk.0.attn_q.weight"),
])
def test_hf_folder_bases_are_read_per_family(tmp_path, model_type, config_name, tensor):
    import transformers

    config = getattr(transformers, config_name)(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FF, num_hidden_layers=BLOCKS,
                                                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                                                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "hf")
    info = read_base_info(tmp_path / "hf")
    assert info.architecture == {"mistral": "llama", "gemma3_text": "gemma3"}.get(model_type, model_type)
    assert (info.block_count, info.head_count, info.head_count_kv) == (BLOCKS, HEADS, KV_HEADS)
    rows = (HEADS + 2 * KV_HEADS) * HEAD_DIM if model_type == "phi3" else HEADS * HEAD_DIM
    assert info.tensor_shapes[tensor] == (rows, HIDDEN)
