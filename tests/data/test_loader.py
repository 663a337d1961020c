"""BatchLoader: padding, packing without attention leaks, deterministic shuffling, resumable position."""

from __future__ import annotations

import random

import pytest
import torch

from senior_intern.data import IGNORE_INDEX, BatchLoader, Sample, block_causal_mask, model_inputs, pack_samples
from senior_intern.data.loader import padded_width
from tests.conftest import make_tiny_llama


def make_samples(lengths, seed=0, vocab=300):
    """Samples with random ids; the first third of each is a masked prompt."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        input_ids = torch.randint(4, vocab, (n,), generator=g).tolist()
        cut = n // 3
        out.append(Sample(input_ids, [IGNORE_INDEX] * cut + input_ids[cut:], f"s.jsonl:{i + 1}"))
    return out


LENGTHS = [7, 12, 5, 20, 9, 3, 16, 11, 4, 14, 6, 8]


def batches(loader):
    return [(b.input_ids.tolist(), b.labels.tolist()) for b in loader]


def real_rows(epoch):
    """Sorted rows of an epoch without their padding (pad id 0 never occurs in make_samples)."""
    return sorted(tuple(t for t in row if t != 0) for ids, _ in epoch for row in ids)


def test_padded_batch_tensors():
    samples = make_samples([5, 11, 3])
    loader = BatchLoader(samples, 3, pad_id=0, max_seq_length=32, packing=False, shuffle=False)
    (b,) = list(loader)
    assert b.input_ids.shape == (3, 16) and b.input_ids.dtype == torch.long  # 11 rounded up to a multiple of 8
    assert b.segment_ids is None and not b.packed
    for r, s in enumerate(samples):
        n = len(s)
        assert b.input_ids[r, :n].tolist() == s.input_ids and set(b.input_ids[r, n:].tolist()) <= {0}
        assert b.labels[r, :n].tolist() == s.labels and set(b.labels[r, n:].tolist()) <= {IGNORE_INDEX}
        assert b.attention_mask[r].tolist() == [1] * n + [0] * (16 - n)
        assert b.position_ids[r].tolist() == list(range(16))
    assert b.n_samples == 3 and b.n_tokens == 19
    assert b.n_trained_tokens == int((b.labels[:, 1:] != IGNORE_INDEX).sum()) == sum(s.n_trained for s in samples)
    exact = BatchLoader(samples, 3, pad_id=0, max_seq_length=32, shuffle=False, pad_to_multiple_of=1)
    assert next(iter(exact)).input_ids.shape == (3, 11)
    assert next(iter(BatchLoader(samples, 3, pad_id=0, max_seq_length=12, shuffle=False))).input_ids.shape == (3, 12)


def test_packed_rows_restart_positions_and_mask_the_first_label():
    samples = make_samples([5, 6, 4])
    loader = BatchLoader(samples, 1, pad_id=0, max_seq_length=16, packing=True, shuffle=False, pad_to_multiple_of=1)
    assert len(loader) == 1
    (b,) = list(loader)
    seg = b.segment_ids[0].tolist()
    assert b.n_samples == 3 and b.n_tokens == 15 and b.input_ids.shape == (1, 15) and -1 not in seg
    row_ids = b.input_ids[0].tolist()
    pos = b.position_ids[0].tolist()
    for k in range(3):
        idx = [t for t, s in enumerate(seg) if s == k]
        s = next(x for x in samples if x.input_ids == row_ids[idx[0]:idx[-1] + 1])
        assert pos[idx[0]:idx[-1] + 1] == list(range(len(s)))
        assert b.labels[0, idx[0]].item() == IGNORE_INDEX
        assert b.labels[0, idx[0] + 1:idx[-1] + 1].tolist() == s.labels[1:]


def test_pack_samples_is_a_deterministic_partition_within_capacity():
    lengths = [random.Random(i).randint(1, 64) for i in range(200)]
    rows = pack_samples(lengths, 64, seed=3)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert rows == pack_samples(lengths, 64, seed=3)
    assert len(rows) <= sum(lengths) // 64 + 3  # best fit decreasing leaves little room
    with pytest.raises(ValueError, match="more than the row length"):
        pack_samples([10, 70], 64, 0)


def test_samples_longer_than_max_seq_length_are_refused():
    with pytest.raises(ValueError, match="s.jsonl:1: 20 tokens, more than max_seq_length 16"):
        BatchLoader(make_samples([20]), 2, pad_id=0, max_seq_length=16)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(make_samples([4]), 0, pad_id=0, max_seq_length=16)


@pytest.mark.parametrize("packing", [False, True])
def test_len_is_constant_and_shuffling_is_deterministic_per_epoch(packing):
    samples = make_samples(LENGTHS * 3)
    make = lambda: BatchLoader(samples, 4, pad_id=0, max_seq_length=32, packing=packing, shuffle=True, seed=7)  # noqa: E731
    a, b = make(), make()
    n = len(a)
    assert n == (len(a.rows) + 3) // 4
    epoch0 = batches(a)
    assert len(epoch0) == n and epoch0 == batches(b)
    a.set_epoch(1)
    epoch1 = batches(a)
    assert len(a) == n and len(epoch1) == n
    assert epoch1 != epoch0
    assert real_rows(epoch1) == real_rows(epoch0)  # the same rows, in another order
    other_seed = BatchLoader(samples, 4, pad_id=0, max_seq_length=32, packing=packing, shuffle=True, seed=8)
    assert batches(other_seed) != epoch0


def test_every_sample_is_seen_once_per_epoch():
    samples = make_samples(LENGTHS)
    loader = BatchLoader(samples, 5, pad_id=0, max_seq_length=32, packing=False, shuffle=True, seed=1)
    seen = sorted(b.input_ids[r][b.attention_mask[r].bool()].tolist() for b in loader for r in range(b.input_ids.shape[0]))
    assert seen == sorted(s.input_ids for s in samples)
    plain = BatchLoader(samples, 5, pad_id=0, max_seq_length=32, shuffle=False)
    first = next(iter(plain))
    assert first.input_ids[0, :7].tolist() == samples[0].input_ids  # no shuffle: original order


def test_iteration_leaves_global_rng_untouched():
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    loader = BatchLoader(make_samples(LENGTHS), 3, pad_id=0, max_seq_length=32, packing=True, shuffle=True, seed=5)
    list(loader)
    loader.set_epoch(4)
    list(loader)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state


@pytest.mark.parametrize("packing", [False, True])
def test_state_dict_resumes_exactly_the_remaining_batches(packing):
    samples = make_samples(LENGTHS * 2)
    kw = dict(pad_id=0, max_seq_length=32, packing=packing, shuffle=True, seed=11)
    full = BatchLoader(samples, 3, **kw)
    full.set_epoch(2)
    expected = batches(full)
    run = BatchLoader(samples, 3, **kw)
    run.set_epoch(2)
    it = iter(run)
    seen = [next(it) for _ in range(2)]
    state = run.state_dict()
    assert state["epoch"] == 2 and state["batch_index"] == 2 and state["seed"] == 11
    resumed = BatchLoader(samples, 3, **kw)
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert [(b.input_ids.tolist(), b.labels.tolist()) for b in seen] + rest == expected
    # After the epoch, iterating again starts the next epoch, same as an uninterrupted loader.
    full.set_epoch(3)
    assert batches(resumed) == batches(full)


def test_load_state_dict_refuses_another_dataset_or_settings():
    loader = BatchLoader(make_samples(LENGTHS), 3, pad_id=0, max_seq_length=32, seed=1)
    state = loader.state_dict()
    other = BatchLoader(make_samples(LENGTHS, seed=9), 3, pad_id=0, max_seq_length=32, seed=1)
    with pytest.raises(ValueError, match="different dataset"):
        other.load_state_dict(state)
    bigger = BatchLoader(make_samples(LENGTHS), 4, pad_id=0, max_seq_length=32, seed=1)
    with pytest.raises(ValueError, match="batch_size=3"):
        bigger.load_state_dict(state)
    with pytest.raises(ValueError, match="batch index 99"):
        loader.load_state_dict({**state, "batch_index": 99})


def test_batch_to_moves_every_tensor():
    (b,) = list(BatchLoader(make_samples([4, 5]), 2, pad_id=0, max_seq_length=16, packing=True, shuffle=False))
    moved = b.to("cpu")
    assert moved.segment_ids is not None and torch.equal(moved.input_ids, b.input_ids) and moved.n_tokens == b.n_tokens


def test_block_causal_mask_values():
    seg = torch.tensor([[0, 0, 1, 1, -1]])
    mask = block_causal_mask(seg, torch.float32)
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],  # padding sees only itself: no fully masked row, no NaN
    ]
    assert mask.dtype == torch.float32 and mask.min().item() == torch.finfo(torch.float32).min
    assert block_causal_mask(seg, torch.bfloat16).dtype == torch.bfloat16


def _token_logprobs(model, inputs, labels):
    """Log-prob of each next label [B, T-1] (0 where ignored)."""
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    assert torch.isfinite(logits).all()
    logp = logits[:, :-1].log_softmax(-1)
    target = labels[:, 1:]
    picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
    return torch.where(target != IGNORE_INDEX, picked, torch.zeros_like(picked))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_gives_the_same_per_token_loss_as_samples_one_by_one(attn):
    model = make_tiny_llama(attn_implementation=attn)
    samples = make_samples([7, 12, 5, 20, 9, 3, 16, 11])
    loader = BatchLoader(samples, 2, pad_id=0, max_seq_length=32, packing=True, shuffle=True, seed=0)
    by_ids = {tuple(s.input_ids): s for s in samples}
    checked = 0
    for b in loader:
        assert b.packed and b.segment_ids.max() >= 1  # rows really hold several samples
        packed = _token_logprobs(model, model_inputs(b, torch.float32), b.labels)
        for r in range(b.input_ids.shape[0]):
            for k in range(int(b.segment_ids[r].max()) + 1):
                idx = (b.segment_ids[r] == k).nonzero().flatten()
                s = by_ids[tuple(b.input_ids[r, idx].tolist())]
                alone = _token_logprobs(model, {"input_ids": torch.tensor([s.input_ids])}, torch.tensor([s.labels]))[0]
                # Position t predicts t+1: the packed log-probs of this sample are at idx[:-1].
                torch.testing.assert_close(packed[r, idx[:-1]], alone, atol=1e-5, rtol=0)
                checked += 1
    assert checked == len(samples)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padded_batch_matches_samples_one_by_one(attn):
    model = make_tiny_llama(attn_implementation=attn)
    samples = make_samples([7, 12, 3])
    (b,) = list(BatchLoader(samples, 3, pad_id=0, max_seq_length=32, packing=False, shuffle=False))
    padded = _token_logprobs(model, model_inputs(b), b.labels)
    for r, s in enumerate(samples):
        alone = _token_logprobs(model, {"input_ids": torch.tensor([s.input_ids])}, torch.tensor([s.labels]))[0]
        torch.testing.assert_close(padded[r, : len(s) - 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_bfloat16_forward_is_finite_at_padding(attn):
    model = make_tiny_llama(attn_implementation=attn).to(torch.bfloat16)
    (b,) = list(BatchLoader(make_samples([5, 9, 3]), 2, pad_id=0, max_seq_length=16, packing=True, shuffle=False))
    assert (b.segment_ids == -1).any()  # the batch has padding
    with torch.no_grad():
        logits = model(**model_inputs(b, torch.bfloat16)).logits
    assert torch.isfinite(logits).all()


def test_padded_width_rounds_up_but_never_past_max_seq_length() -> None:
    assert padded_width(13, 8, 64) == 16
    assert padded_width(16, 8, 64) == 16
    assert padded_width(61, 8, 62) == 62  # rounding would pass the longest row allowed
    assert padded_width(13, 1, 64) == 13
    loader = BatchLoader(make_samples([7, 12, 5, 20, 9]), 5, pad_id=0, max_seq_length=40, shuffle=False)
    longest = max(len(s) for s in loader.samples)
    assert next(iter(loader)).input_ids.shape[1] == padded_width(longest, 8, 40) == 24
