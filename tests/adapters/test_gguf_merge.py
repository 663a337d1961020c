"""Merged GGUF export: untouched tensors bitwise, touched ones = base + delta in the chosen type, refusals."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from senior_intern.adapters.gguf import llama_qk_permute
from senior_intern.adapters.gguf_merge import export_merged_gguf
from senior_intern.adapters.merge import read_peft_adapter
from tests.adapters.conftest import save_peft_adapter
from tests.conftest import make_tiny_llama

Q = gguf.GGMLQuantizationType
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def write_tiny_llama_gguf(path: Path, model, matrix_type: Q = Q.Q8_0) -> Path:
    """The tiny HF Llama as a GGUF the way llama.cpp's converter writes it (q/k rows permuted)."""
    cfg = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    writer.add_token_types([1] * cfg.vocab_size)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, value in model.state_dict().items():
        data = value.detach().numpy().astype(np.float32)
        name = name_map.get_name(key, try_suffixes=(".weight",))
        if key.endswith("q_proj.weight"):
            data = llama_qk_permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = llama_qk_permute(data, cfg.num_key_value_heads)
        qtype = Q.F32 if data.ndim == 1 else (Q.F16 if name == "token_embd.weight" else matrix_type)
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf_and_adapter(tmp_path):
    base = write_tiny_llama_gguf(tmp_path / "base.gguf", make_tiny_llama())
    folder = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), folder, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    return base, folder


def _tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _fields(path: Path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


def _expected(base_t, lora, permute_heads: int | None) -> np.ndarray:
    delta = lora.delta().numpy()
    if permute_heads:
        delta = llama_qk_permute(delta, permute_heads)
    return gguf.quants.dequantize(base_t.data, base_t.tensor_type).reshape(delta.shape) + delta


def test_untouched_tensors_are_bitwise_and_header_is_kept(tiny_gguf_and_adapter, tmp_path):
    base, folder = tiny_gguf_and_adapter
    seen = []
    result = export_merged_gguf(folder, base, tmp_path / "merged.gguf", on_progress=lambda d, t, n: seen.append((d, t)))
    before, after = _tensors(base), _tensors(result.path)
    assert list(before) == list(after)
    touched = {f"blk.{b}.{n}.weight" for b in (0, 1) for n in ("attn_q", "attn_v", "ffn_down")}
    assert set(result.merged) == touched and result.notes == []
    for name, t in before.items():
        if name not in touched:
            assert after[name].tensor_type == t.tensor_type
            assert after[name].data.tobytes() == t.data.tobytes(), name
        else:
            assert after[name].tensor_type == Q.Q8_0  # "same"
            assert after[name].data.tobytes() != t.data.tobytes(), name
    assert _fields(base) == _fields(result.path)
    assert seen[-1] == (len(before), len(before)) and len(seen) == len(before)


def test_merged_values_are_base_plus_delta_with_llama_qk_permutation(tiny_gguf_and_adapter, tmp_path):
    base, folder = tiny_gguf_and_adapter
    out = export_merged_gguf(folder, base, tmp_path / "m.gguf", qtype="f16").path
    before, after = _tensors(base), _tensors(out)
    loras = {lora.module: lora for lora in read_peft_adapter(folder).modules}
    for block in (0, 1):
        for proj, gname, heads in (("self_attn.q_proj", "attn_q", 4), ("self_attn.v_proj", "attn_v", None), ("mlp.down_proj", "ffn_down", None)):
            name = f"blk.{block}.{gname}.weight"
            want = _expected(before[name], loras[f"model.layers.{block}.{proj}"], heads)
            got = gguf.quants.dequantize(after[name].data, after[name].tensor_type)
            assert after[name].tensor_type == Q.F16
            np.testing.assert_allclose(got, want, atol=2e-3)
            if heads:  # without the permutation the merge would be visibly wrong
                wrong = _expected(before[name], loras[f"model.layers.{block}.{proj}"], None)
                assert np.abs(got - wrong).max() > 1e-2


@pytest.mark.parametrize("qtype, want", [("q4_0", Q.Q4_0), ("bf16", Q.BF16), ("q8_0", Q.Q8_0)])
def test_requested_type_is_used(tiny_gguf_and_adapter, tmp_path, qtype, want):
    base, folder = tiny_gguf_and_adapter
    result = export_merged_gguf(folder, base, tmp_path / "m.gguf", qtype=qtype)
    after = _tensors(result.path)
    assert all(after[name].tensor_type == want for name in result.merged)
    assert after["token_embd.weight"].tensor_type == Q.F16


def test_same_falls_back_to_q8_0_for_types_the_package_cannot_write(tmp_path):
    # Q6_K needs rows of 256: a tiny Llama with 256-wide matrices.
    model = make_tiny_llama(hidden_size=256, intermediate_size=256)
    base = tmp_path / "base.gguf"
    writer_rows = _write_q6k_copy(model, base)
    folder = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(hidden_size=256, intermediate_size=256), folder, target_modules=["v_proj"])
    result = export_merged_gguf(folder, writer_rows, tmp_path / "m.gguf")
    assert set(result.merged.values()) == {"Q8_0"}
    assert len(result.notes) == 2 and "cannot write Q6_K" in result.notes[0]


def _write_q6k_copy(model, path: Path) -> Path:
    """A base whose v projections are Q6_K bytes (values irrelevant: the decoder reads any bytes)."""
    src = write_tiny_llama_gguf(path.with_name("src.gguf"), model, matrix_type=Q.F32)
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(path, "llama")
    for name, fld in reader.fields.items():
        if not name.startswith("GGUF.") and name != "general.architecture":
            sub = fld.types[-1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, fld.contents(), fld.types[0], sub_type=sub)
    rng = np.random.default_rng(0)
    block_bytes = gguf.GGML_QUANT_SIZES[Q.Q6_K][1]
    for t in reader.tensors:
        if ".attn_v." in t.name:
            rows, cols = (int(d) for d in reversed(t.shape.tolist()))
            raw = rng.integers(0, 255, size=(rows, cols // 256 * block_bytes), dtype=np.uint8)
            raw[:, block_bytes - 2:block_bytes] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)  # scale d
            writer.add_tensor(t.name, raw, raw_dtype=Q.Q6_K)
        else:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_refusals(tiny_gguf_and_adapter, tmp_path, tiny_base_dir):
    base, folder = tiny_gguf_and_adapter
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="--force"):
        export_merged_gguf(folder, base, out)
    assert out.read_bytes() == b"keep"
    export_merged_gguf(folder, base, out, overwrite=True)
    assert gguf.GGUFReader(out).tensors
    size = base.stat().st_size
    with pytest.raises(ValueError, match="is the base model"):
        export_merged_gguf(folder, base, base, overwrite=True)
    assert base.stat().st_size == size
    with pytest.raises(ValueError, match="type must be one of"):
        export_merged_gguf(folder, base, tmp_path / "x.gguf", qtype="q6_k")
    unknown = tmp_path / "gpt2-base"
    unknown.mkdir()
    (unknown / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="model_type 'gpt2' cannot be written as GGUF"):
        export_merged_gguf(folder, unknown, tmp_path / "y.gguf")
    assert not list(tmp_path.glob(".*.partial"))


def test_same_on_a_4_bit_base_says_the_rounding_can_lose_the_adapter(tmp_path):
    model = make_tiny_llama()
    base = write_tiny_llama_gguf(tmp_path / "q4.gguf", model, matrix_type=Q.Q4_0)
    folder = tmp_path / "adapter"
    save_peft_adapter(model, folder, target_modules=["v_proj"])
    same = export_merged_gguf(folder, base, tmp_path / "same.gguf")
    assert set(same.merged.values()) == {"Q4_0"}
    assert any("re-encoded as Q4_0" in note and "--type q8_0" in note for note in same.notes)
    assert not any("re-encoded" in note for note in export_merged_gguf(folder, base, tmp_path / "q8.gguf", qtype="q8_0").notes)
