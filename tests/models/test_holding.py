"""``base_holding`` says, from the files alone, how ``load_base_model`` holds a base and its bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from senior_intern.models import load_base_model
from senior_intern.models.holding import base_holding
from senior_intern.models.quantized import compact_bytes


def _buffers(model) -> int:
    """Bytes of the buffers that are not weights (rotary frequencies; compact scales excluded)."""
    return sum(b.numel() * b.element_size() for name, b in model.named_buffers()
               if not name.endswith((".qdata", ".qscale")))


def test_the_demo_gguf_is_held_in_its_blocks_at_the_bytes_it_opens_with(demo_gguf: Path) -> None:
    holding = base_holding(demo_gguf)
    assert holding.held == "gguf" and not holding.unsupported
    # 210 Q4_1 decoder linears and the Q8_0 token embedding, which the tied head reads too
    assert [(p.kind, p.tensors) for p in holding.compact] == [("Q4_1", 210), ("Q8_0", 1)]
    assert holding.dense_elements == 61 * 576  # the norms only
    loaded = load_base_model(demo_gguf)
    packed, other = compact_bytes(loaded.model)
    assert holding.compact_bytes == packed
    assert holding.memory_bytes(4) == packed + other - _buffers(loaded.model)  # rotary buffers are not weights
    # the tied head reads the embedding's blocks; every other compact weight is a decoder linear
    assert holding.head == holding.compact[1] and holding.lookup is None
    assert holding.decoder_parts() == {"Q4_1": holding.compact[0].elements}


@pytest.mark.parametrize("kind", ["none", "int8", "int4"])
def test_a_folder_is_held_as_base_quantization_says(tiny_folder: Path, kind: str) -> None:
    holding = base_holding(tiny_folder, kind)
    loaded = load_base_model(tiny_folder, base_quantization=kind)
    packed, other = compact_bytes(loaded.model)
    assert holding.held == ("float" if kind == "none" else kind) == loaded.info.base_held
    assert holding.compact_bytes == packed
    assert holding.memory_bytes(4) == packed + other - _buffers(loaded.model)


def test_a_linear_weight_without_a_kernel_is_named(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "iq.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.IQ2_XXS][1]  # one block of 256 values a row
    rows = np.zeros((4, block_bytes), dtype=np.uint8)
    writer.add_tensor("blk.0.attn_q.weight", rows, raw_dtype=gguf.GGMLQuantizationType.IQ2_XXS)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(256, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    holding = base_holding(path)
    assert holding.unsupported == ("IQ2_XXS",) and holding.compact == ()


@pytest.mark.parametrize(("architecture", "compact"), [("llama", True), ("gemma2", False), ("gemma3", False)])
def test_a_scaled_embedding_is_counted_dense(tmp_path: Path, architecture: str, compact: bool) -> None:
    """Gemma's embeddings scale their rows (not a plain nn.Embedding): the loader keeps them dense."""
    import gguf
    import numpy as np

    path = tmp_path / f"{architecture}.gguf"
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    holding = base_holding(path)
    assert [p.kind for p in holding.compact] == (["Q8_0"] if compact else [])
    assert holding.dense_elements == (0 if compact else 8 * 32)


def test_an_untied_head_and_a_looked_up_embedding_are_told_apart(tmp_path: Path) -> None:
    """With its own ``output.weight`` the head reads that; the embedding is only looked up."""
    import gguf
    import numpy as np

    path = tmp_path / "untied.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    q8 = gguf.GGMLQuantizationType.Q8_0
    for name, rows, kind in (("token_embd.weight", 8, q8), ("output.weight", 6, q8),
                             ("blk.0.attn_q.weight", 4, gguf.GGMLQuantizationType.Q4_0)):
        block_bytes = gguf.GGML_QUANT_SIZES[kind][1]
        writer.add_tensor(name, np.zeros((rows, 2 * block_bytes), dtype=np.uint8), raw_dtype=kind)  # 64 values a row
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    holding = base_holding(path)
    assert (holding.head.kind, holding.head.elements) == ("Q8_0", 6 * 64)  # output.weight
    assert (holding.lookup.kind, holding.lookup.elements) == ("Q8_0", 8 * 64)  # token_embd.weight
    assert holding.decoder_parts() == {"Q4_0": 4 * 64}
