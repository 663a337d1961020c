"""GGUF LoRA export: header keys, tensor layout, dtypes, scale folding, q/k permutation, refusals.

The tiny-model tests check the file against the PEFT adapter it came from; the demo-model tests
check it against the real base GGUF that llama.cpp would load it onto.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from senior_intern.adapters.gguf import export_gguf, llama_qk_permute, read_base_info
from tests.adapters.conftest import ALL_PROJECTIONS, save_peft_adapter
from tests.conftest import make_tiny_llama

GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
TINY_HEADS, TINY_KV_HEADS = 4, 2


def _module(block: int, proj: str) -> str:
    group = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"model.layers.{block}.{group}.{proj}"


def _read(path: Path) -> tuple[dict, dict]:
    """(header values, {tensor name: ReaderTensor}) of a GGUF file."""
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


def _values(tensor) -> np.ndarray:
    """A reader tensor dequantised to float32 in numpy order."""
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)


def _lora_ab(peft_model, module: str) -> tuple[np.ndarray, np.ndarray, float]:
    """PEFT's A [r, in], B [out, r] and scaling of one adapted layer."""
    layer = peft_model.get_base_model().get_submodule(module)
    a = layer.lora_A["default"].weight.detach().numpy()
    b = layer.lora_B["default"].weight.detach().numpy()
    return a, b, float(layer.scaling["default"])


def _gguf_rows(proj: str, rows: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """HF row order -> GGUF row order for one projection (only q and k are reordered)."""
    if proj == "q_proj":
        return llama_qk_permute(rows, heads)
    if proj == "k_proj":
        return llama_qk_permute(rows, kv_heads)
    return rows


@pytest.fixture
def tiny_adapter(tmp_path):
    """A rank-4 PEFT adapter on all seven projections of the tiny Llama, and its PEFT model."""
    folder = tmp_path / "adapter"
    return folder, save_peft_adapter(make_tiny_llama(), folder, r=4, lora_alpha=8)


def test_header_names_shapes_and_values_f32(tiny_adapter, tiny_base_dir, tmp_path):
    folder, peft_model = tiny_adapter
    out = export_gguf(folder, tiny_base_dir, tmp_path / "out" / "adapter.gguf")

    fields, tensors = _read(out)
    assert fields["general.architecture"] == "llama"
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == pytest.approx(8.0)
    expected = {
        f"blk.{block}.{GGUF_NAMES[proj]}.weight.lora_{side}"
        for block in (0, 1)
        for proj in ALL_PROJECTIONS
        for side in "ab"
    }
    assert set(tensors) == expected
    for block in (0, 1):
        for proj in ALL_PROJECTIONS:
            a, b, _ = _lora_ab(peft_model, _module(block, proj))
            stem = f"blk.{block}.{GGUF_NAMES[proj]}.weight"
            lora_a, lora_b = tensors[f"{stem}.lora_a"], tensors[f"{stem}.lora_b"]
            # llama.cpp's view (ne, innermost first): a = [in, r], b = [r, out]
            assert lora_a.shape.tolist() == [a.shape[1], 4]
            assert lora_b.shape.tolist() == [4, b.shape[0]]
            assert lora_a.tensor_type == lora_b.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(_values(lora_a), a)
            np.testing.assert_array_equal(_values(lora_b), _gguf_rows(proj, b, TINY_HEADS, TINY_KV_HEADS))
    assert [p.name for p in out.parent.iterdir()] == ["adapter.gguf"], "no temporary file is left behind"


@pytest.mark.parametrize(
    ("dtype", "rank", "type_a", "type_b", "rtol"),
    [
        ("f16", 4, "F16", "F16", 1e-3),
        ("bf16", 4, "BF16", "BF16", 1e-2),
        ("q8_0", 4, "Q8_0", "F16", 1e-2),  # lora_b rows hold r=4 values: too short for Q8_0 blocks
        ("q8_0", 32, "Q8_0", "Q8_0", 1e-2),
    ],
)
def test_dtypes(tmp_path, tiny_base_dir, dtype, rank, type_a, type_b, rtol):
    folder = tmp_path / "adapter"
    peft_model = save_peft_adapter(make_tiny_llama(), folder, r=rank, lora_alpha=2 * rank)
    out = export_gguf(folder, tiny_base_dir, tmp_path / f"adapter-{dtype}.gguf", dtype=dtype)

    _, tensors = _read(out)
    a, b, _ = _lora_ab(peft_model, _module(1, "up_proj"))
    lora_a, lora_b = tensors["blk.1.ffn_up.weight.lora_a"], tensors["blk.1.ffn_up.weight.lora_b"]
    assert (lora_a.tensor_type.name, lora_b.tensor_type.name) == (type_a, type_b)
    assert lora_a.shape.tolist() == [64, rank] and lora_b.shape.tolist() == [rank, 128]
    np.testing.assert_allclose(_values(lora_a), a, rtol=0, atol=rtol * np.abs(a).max())
    np.testing.assert_allclose(_values(lora_b), b, rtol=0, atol=rtol * np.abs(b).max())


def _llama_cpp_delta(tensors: dict, stem: str, alpha: float) -> np.ndarray:
    """The update llama.cpp applies: (alpha / r) * lora_b @ lora_a with r = lora_b's ne[0]."""
    lora_a, lora_b = _values(tensors[f"{stem}.lora_a"]), _values(tensors[f"{stem}.lora_b"])
    return (alpha / lora_b.shape[1]) * (lora_b @ lora_a)


def test_rslora_is_folded_into_alpha(tmp_path, tiny_base_dir):
    folder = tmp_path / "adapter"
    peft_model = save_peft_adapter(make_tiny_llama(), folder, r=16, lora_alpha=8, use_rslora=True)
    fields, tensors = _read(export_gguf(folder, tiny_base_dir, tmp_path / "a.gguf"))

    assert fields["adapter.lora.alpha"] == pytest.approx(8 * math.sqrt(16))
    a, b, scaling = _lora_ab(peft_model, _module(0, "gate_proj"))
    assert scaling == pytest.approx(8 / math.sqrt(16))
    delta = _llama_cpp_delta(tensors, "blk.0.ffn_gate.weight", fields["adapter.lora.alpha"])
    np.testing.assert_allclose(delta, scaling * (b @ a), rtol=1e-5, atol=1e-7)


def test_alpha_and_rank_patterns_are_folded_per_layer(tmp_path, tiny_base_dir):
    folder = tmp_path / "adapter"
    peft_model = save_peft_adapter(
        make_tiny_llama(),
        folder,
        r=4,
        lora_alpha=8,
        alpha_pattern={"q_proj": 24, "layers.1.mlp.down_proj": 2},
        rank_pattern={"layers.1.mlp.down_proj": 8},
    )
    fields, tensors = _read(export_gguf(folder, tiny_base_dir, tmp_path / "a.gguf"))
    alpha = fields["adapter.lora.alpha"]
    assert alpha == pytest.approx(8.0)

    for block in (0, 1):
        for proj in ALL_PROJECTIONS:
            a, b, scaling = _lora_ab(peft_model, _module(block, proj))
            stem = f"blk.{block}.{GGUF_NAMES[proj]}.weight"
            expected = _gguf_rows(proj, scaling * (b @ a), TINY_HEADS, TINY_KV_HEADS)
            np.testing.assert_allclose(_llama_cpp_delta(tensors, stem, alpha), expected, rtol=1e-5, atol=1e-7)
    assert tensors["blk.1.ffn_down.weight.lora_b"].shape.tolist() == [8, 64]
    assert _lora_ab(peft_model, _module(1, "q_proj"))[2] == pytest.approx(24 / 4), "the pattern took effect"


@pytest.mark.parametrize(
    ("lora_kwargs", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"bias": "all"}, "biases"),
        ({"lora_bias": True}, "biases"),
    ],
)
def test_refuses_what_gguf_cannot_express(tmp_path, tiny_base_dir, lora_kwargs, message):
    folder = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), folder, **lora_kwargs)
    out = tmp_path / "a.gguf"
    with pytest.raises(ValueError, match=message):
        export_gguf(folder, tiny_base_dir, out)
    assert not out.exists()


def _rename_module(folder: Path, old: str, new: str) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    save_file({key.replace(old, new): value for key, value in tensors.items()}, path)


def test_refuses_module_without_gguf_name(tiny_adapter, tiny_base_dir, tmp_path):
    folder, _ = tiny_adapter
    _rename_module(folder, "layers.0.self_attn.v_proj", "layers.0.self_attn.vision_proj")
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.vision_proj.*no GGUF tensor"):
        export_gguf(folder, tiny_base_dir, tmp_path / "a.gguf")


def test_refuses_adapter_for_another_model(tiny_adapter, tmp_path):
    folder, _ = tiny_adapter
    one_block = tmp_path / "one-block"
    make_tiny_llama(num_hidden_layers=1).save_pretrained(one_block)
    with pytest.raises(ValueError, match=r"layers\.1.*1 blocks"):
        export_gguf(folder, one_block, tmp_path / "a.gguf")

    wider = tmp_path / "wider"
    make_tiny_llama(hidden_size=128).save_pretrained(wider)
    with pytest.raises(ValueError, match="another model"):
        export_gguf(folder, wider, tmp_path / "a.gguf")


def test_refuses_lm_head_tied_to_embeddings(tmp_path):
    base = tmp_path / "tied"
    make_tiny_llama(tie_word_embeddings=True).save_pretrained(base)
    folder = tmp_path / "adapter"
    peft_model = save_peft_adapter(make_tiny_llama(tie_word_embeddings=True), folder, target_modules=["q_proj", "lm_head"])
    with pytest.raises(ValueError, match=r"unexpected tensor .*lm_head.*full layer weight"):
        export_gguf(folder, base, tmp_path / "a.gguf")

    peft_model.save_pretrained(folder, save_embedding_layers=False)
    with pytest.raises(ValueError, match=r"no GGUF tensor 'output\.weight'.*tied"):
        export_gguf(folder, base, tmp_path / "a.gguf")


def test_refuses_non_finite_weights(tiny_adapter, tiny_base_dir, tmp_path):
    folder, _ = tiny_adapter
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    tensors["base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"][0, 0] = float("inf")
    save_file(tensors, path)
    with pytest.raises(ValueError, match="up_proj.*NaN or Inf"):
        export_gguf(folder, tiny_base_dir, tmp_path / "a.gguf")


def test_refuses_bad_arguments(tiny_adapter, tiny_base_dir, tmp_path):
    folder, _ = tiny_adapter
    with pytest.raises(ValueError, match="dtype must be one of f32, f16, bf16, q8_0"):
        export_gguf(folder, tiny_base_dir, tmp_path / "a.gguf", dtype="q4_0")
    with pytest.raises(FileNotFoundError, match="Base model not found"):
        export_gguf(folder, tmp_path / "missing.gguf", tmp_path / "a.gguf")
    with pytest.raises(FileNotFoundError, match="Adapter folder not found"):
        export_gguf(tmp_path / "no-adapter", tiny_base_dir, tmp_path / "a.gguf")

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "num_hidden_layers": 2}))
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported.*convert_hf_to_gguf"):
        export_gguf(folder, gpt2, tmp_path / "a.gguf")


def test_permutation_interleaves_rotary_halves():
    rows = np.arange(8)[:, None] * np.ones((1, 3))  # 2 heads of 4 rows: halves [0,1|2,3], [4,5|6,7]
    np.testing.assert_array_equal(llama_qk_permute(rows, 2)[:, 0], [0, 2, 1, 3, 4, 6, 5, 7])
    with pytest.raises(ValueError, match="cannot split 8 rows into 3 heads"):
        llama_qk_permute(rows, 3)


# --- the real demo model: SmolLM2-135M, Llama architecture, 9 heads / 3 kv heads, Q4_1 GGUF ---

DEMO_HEADS, DEMO_KV_HEADS, DEMO_RANK, DEMO_ALPHA = 9, 3, 8, 16.0
DEMO_BLOCKS = (0, 29)


@pytest.fixture(scope="module")
def demo(demo_gguf, tmp_path_factory):
    """The demo model loaded once: its HF (un-permuted) weights, a PEFT adapter on blocks 0 and 29,
    PEFT's merged weights, and the adapter exported next to it in f32, f16 and q8_0."""
    from transformers import AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("demo-gguf")
    model = AutoModelForCausalLM.from_pretrained(demo_gguf.parent, gguf_file=demo_gguf.name, dtype=torch.float32)
    modules = [_module(block, proj) for block in DEMO_BLOCKS for proj in ALL_PROJECTIONS]
    base = {name: model.get_submodule(name).weight.detach().clone().numpy() for name in modules}
    adapter_dir = tmp / "adapter"
    peft_model = save_peft_adapter(
        model, adapter_dir, seed=1, r=DEMO_RANK, lora_alpha=DEMO_ALPHA, layers_to_transform=list(DEMO_BLOCKS)
    )
    lora = {name: _lora_ab(peft_model, name) for name in modules}
    merged_model = peft_model.merge_and_unload()
    merged = {name: merged_model.get_submodule(name).weight.detach().numpy().copy() for name in modules}
    files = {dtype: export_gguf(adapter_dir, demo_gguf, tmp / f"adapter-{dtype}.gguf", dtype) for dtype in ("f32", "f16", "q8_0")}
    _, base_tensors = _read(demo_gguf)
    return SimpleNamespace(base=base, lora=lora, merged=merged, files=files, base_tensors=base_tensors)


def test_demo_base_info(demo_gguf):
    info = read_base_info(demo_gguf)
    assert (info.architecture, info.block_count, info.head_count, info.head_count_kv) == ("llama", 30, 9, 3)
    assert info.tensor_shapes["blk.0.attn_k.weight"] == (192, 576)


def test_demo_permutation_reproduces_the_base_gguf(demo):
    for proj, heads in (("q_proj", DEMO_HEADS), ("k_proj", DEMO_KV_HEADS)):
        w_hf = demo.base[_module(0, proj)]
        w_gguf = _values(demo.base_tensors[f"blk.0.{GGUF_NAMES[proj]}.weight"])
        assert not np.allclose(w_hf, w_gguf, atol=1e-2), "the GGUF rows really are in another order"
        # transformers dequantises the same Q4_1 blocks, so only float rounding can differ
        np.testing.assert_allclose(llama_qk_permute(w_hf, heads), w_gguf, rtol=0, atol=1e-6)


def test_demo_lora_b_gets_the_same_permutation(demo):
    fields, tensors = _read(demo.files["f32"])
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == DEMO_ALPHA
    assert len(tensors) == 2 * len(DEMO_BLOCKS) * len(ALL_PROJECTIONS)
    for proj, heads in (("q_proj", DEMO_HEADS), ("k_proj", DEMO_KV_HEADS), ("v_proj", None)):
        a, b, _ = demo.lora[_module(0, proj)]
        stem = f"blk.0.{GGUF_NAMES[proj]}.weight"
        expected_b = llama_qk_permute(b, heads) if heads else b
        np.testing.assert_array_equal(_values(tensors[f"{stem}.lora_b"]), expected_b)
        np.testing.assert_array_equal(_values(tensors[f"{stem}.lora_a"]), a)


@pytest.mark.parametrize(("dtype", "tolerance"), [("f32", 1e-5), ("f16", 2e-3), ("q8_0", 2e-2)])
def test_demo_adapter_applied_to_gguf_base_matches_merged_model(demo, dtype, tolerance):
    """W_gguf + (alpha / r) * lora_b @ lora_a == the PEFT-merged weight in GGUF row order.

    ``tolerance`` is relative to the size of the update (f16/q8_0 round lora_a and lora_b).
    """
    fields, tensors = _read(demo.files[dtype])
    for block in DEMO_BLOCKS:
        for proj in ALL_PROJECTIONS:
            name, stem = _module(block, proj), f"blk.{block}.{GGUF_NAMES[proj]}.weight"
            w_gguf = _values(demo.base_tensors[stem])
            applied = w_gguf + _llama_cpp_delta(tensors, stem, fields["adapter.lora.alpha"])
            expected = _gguf_rows(proj, demo.merged[name], DEMO_HEADS, DEMO_KV_HEADS)
            update = np.abs(demo.merged[name] - demo.base[name]).max()
            assert update > 1e-3, "the adapter changes the weight"
            np.testing.assert_allclose(applied, expected, rtol=0, atol=tolerance * update + 1e-6, err_msg=stem)
