"""Per-sample attention for packed rows: the same loss and LoRA gradients as the block-diagonal
mask, on a GQA Llama with several samples per row and trailing padding; other calls are sdpa."""

from __future__ import annotations

import random

import pytest
import torch

from senior_intern.config import LoraConfig, TrainingConfig
from senior_intern.data import BatchLoader, Sample, model_inputs
from senior_intern.lora import LoraModel
from senior_intern.training import attention
from senior_intern.training.attention import SEGMENT_ATTENTION, enable_segment_attention, segment_lengths
from senior_intern.training.forward import CausalLMForward, training_inputs
from senior_intern.training.prepare import prepare_for_training
from tests.conftest import make_tiny_llama


def _samples(lengths: list[int], seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = [rng.randrange(1, 300) for _ in range(n)]
        labels = [-100] * (n // 3) + ids[n // 3:]
        out.append(Sample(ids, labels, f"s{i}"))
    return out


def _packed_batch():
    loader = BatchLoader(_samples([9, 17, 5, 30, 12, 7, 21, 3]), 3, pad_id=0, max_seq_length=40, packing=True,
                         shuffle=False, pad_to_multiple_of=8)
    batch = next(iter(loader))
    assert batch.segment_ids is not None and int(batch.segment_ids.max()) > 0
    assert bool((batch.segment_ids == -1).any())  # trailing padding in some row
    return batch


def test_segment_lengths_are_the_runs_of_each_row():
    ids = torch.tensor([[0, 0, 0, 1, 1, -1, -1], [0, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 3, 3, -1]])
    assert segment_lengths(ids) == ((3, 2, 2), (7,), (1, 1, 1, 3, 1))


def _loss_and_grads(segments: bool, batch):
    model = make_tiny_llama(seed=3)
    lora = LoraModel(model, LoraConfig(rank=4, alpha=8.0, dropout=0.0))
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    lora.train()
    prepare_for_training(model, TrainingConfig(), segment_attention=segments)
    forward = CausalLMForward(model, chunk_size=16)
    assert forward.segments is segments
    inputs = training_inputs(batch, torch.float32, "cpu", forward.segments)
    assert ("segments" in inputs) is segments and "attention_mask" in inputs
    if segments:  # a placeholder: no [B, 1, T, T] memory
        assert inputs["attention_mask"].dim() == 4 and inputs["attention_mask"].untyped_storage().nbytes() == 1
    parts = forward(inputs, batch.labels)
    parts.loss_sum.backward()
    grads = {name: p.grad.clone() for name, p in lora.model.named_parameters() if p.requires_grad}
    return parts.loss_sum.detach(), parts.n_valid, grads


def test_per_sample_attention_gives_the_masked_loss_and_lora_gradients(monkeypatch):
    calls = []
    real = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    batch = _packed_batch()
    loss_mask, n_mask, grads_mask = _loss_and_grads(False, batch)
    assert len(calls) == 2  # two layers, one masked product each
    calls.clear()
    loss_seg, n_seg, grads_seg = _loss_and_grads(True, batch)
    runs = sum(len(row) for row in segment_lengths(batch.segment_ids))
    assert runs > batch.input_ids.shape[0] and len(calls) == 2 * runs  # one causal product per run
    assert n_seg == n_mask
    torch.testing.assert_close(loss_seg, loss_mask, rtol=1e-5, atol=1e-5)
    assert grads_seg.keys() == grads_mask.keys() and len(grads_seg) == 2 * 2 * 7
    for name in grads_mask:
        torch.testing.assert_close(grads_seg[name], grads_mask[name], rtol=1e-5, atol=1e-6, msg=name)


def test_without_segment_lengths_the_model_computes_as_sdpa():
    batch = BatchLoader(_samples([9, 17, 5]), 3, pad_id=0, max_seq_length=40, packing=False, shuffle=False).__iter__().__next__()
    plain = make_tiny_llama(seed=5)
    switched = make_tiny_llama(seed=5)
    assert enable_segment_attention(switched)
    assert switched.config._attn_implementation == SEGMENT_ATTENTION
    inputs = model_inputs(batch)  # padded rows with a 2D mask
    with torch.no_grad():
        torch.testing.assert_close(switched(**inputs).logits, plain(**inputs).logits)
        prompt = batch.input_ids[:1, :5]
        assert torch.equal(switched.generate(prompt, max_new_tokens=4, do_sample=False),
                           plain.generate(prompt, max_new_tokens=4, do_sample=False))


@pytest.mark.parametrize("implementation", ["eager"])
def test_models_not_on_sdpa_keep_their_attention(implementation):
    model = make_tiny_llama(attn_implementation=implementation)
    assert not enable_segment_attention(model)
    assert model.config._attn_implementation == implementation
    forward = CausalLMForward(model)
    assert not forward.segments
    assert "attention_mask" in training_inputs(_packed_batch(), torch.float32, "cpu", forward.segments)


def test_masked_path_is_one_attention_call_per_layer_with_the_same_loss_and_gradients(monkeypatch):
    """The GPU path without varlen (MPS, CUDA float32): one SDPA call per layer, however many samples."""
    batch = _packed_batch()
    loss_loop, n_loop, grads_loop = _loss_and_grads(True, batch)
    calls = []
    real = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(k.get("attn_mask")) or real(*a, **k))
    monkeypatch.setattr(attention, "attention_path", lambda device, dtype: "masked")
    built = []
    real_mask = attention.Segments.mask
    monkeypatch.setattr(attention.Segments, "mask", lambda self, device: built.append(self._mask is None) or real_mask(self, device))
    loss_one, n_one, grads_one = _loss_and_grads(True, batch)
    assert len(calls) == 2  # budget: one call per layer (2 layers), not one per sample
    assert built == [True, False]  # the block mask is built once per batch, shared by the layers
    assert calls[0] is calls[1] and calls[0].shape == (3, 1, batch.input_ids.shape[1], batch.input_ids.shape[1])
    assert n_one == n_loop
    torch.testing.assert_close(loss_one, loss_loop, rtol=1e-5, atol=1e-5)
    for name in grads_loop:
        torch.testing.assert_close(grads_one[name], grads_loop[name], rtol=1e-5, atol=1e-6, msg=name)


def test_transformers_builds_no_mask_and_does_not_look_for_packing(monkeypatch):
    import transformers.masking_utils as mu

    looked = []
    monkeypatch.setattr(mu, "find_packed_sequence_indices", lambda *a, **k: looked.append(1))
    monkeypatch.setattr(mu, "sdpa_mask", lambda *a, **k: looked.append(2))
    attention._register()
    try:
        _loss_and_grads(True, _packed_batch())
    finally:
        monkeypatch.undo()
        attention._register()  # the real sdpa_mask again, for the padded batches of later tests
    assert looked == []


def test_segments_are_vectorised_and_cumulative_over_the_flat_batch():
    ids = torch.tensor([[0, 0, 0, 1, 1, -1, -1], [0, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 3, 3, -1]])
    seg = attention.segments_of(ids, "cpu")
    assert seg.lengths == ((3, 2, 2), (7,), (1, 1, 1, 3, 1)) and seg.max_len == 7
    assert seg.cu_seqlens.dtype == torch.int32
    assert seg.cu_seqlens.tolist() == [0, 3, 5, 7, 14, 15, 16, 17, 20, 21]
    mask = seg.mask(torch.device("cpu"))[:, 0]
    expected = (ids[:, :, None] == ids[:, None, :]) & torch.ones(7, 7, dtype=torch.bool).tril()
    assert torch.equal(mask, expected)


@pytest.mark.parametrize(("kind", "dtype", "path"), [
    ("cuda", torch.bfloat16, "varlen"), ("cuda", torch.float16, "varlen"), ("cuda", torch.float32, "masked"),
    ("mps", torch.bfloat16, "masked"), ("cpu", torch.float32, "per_sample"), ("cpu", torch.bfloat16, "per_sample"),
])
def test_attention_path_by_device_and_dtype(monkeypatch, kind, dtype, path):
    monkeypatch.setattr(torch.version, "hip", None)
    if attention.varlen_attn is None and path == "varlen":
        path = "masked"
    assert attention.attention_path(torch.device(kind), dtype) == path
