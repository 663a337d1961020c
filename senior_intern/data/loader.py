"""Batches for training: dynamic padding or packing, deterministic shuffling, resumable position.

Without packing every row of a batch is one sample, right-padded to the longest row of the
batch (rounded up to ``pad_to_multiple_of``). With packing, samples are packed once, at
construction, into rows of at most ``max_seq_length`` tokens (best fit, longest first, ties
in an order drawn from the seed), so the number of batches per epoch is known up front and
never changes; each epoch shuffles the rows. In a packed row ``position_ids`` restart at 0 for
every sample, ``segment_ids`` tell the samples apart, and the first label of every sample is
-100 so that no loss crosses a sample boundary (position t predicts label t + 1).

``model_inputs`` turns a batch into keyword arguments for a Hugging Face causal LM; for packed
batches it builds a block-diagonal causal mask so that attention never crosses samples.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from array import array
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from senior_intern.data.tokenize import IGNORE_INDEX, Sample


def non_blocking_ok(device: torch.device | str) -> bool:
    """Whether a host-to-``device`` copy may be ``non_blocking``: on CUDA only.

    A CUDA copy from pageable memory is staged before the call returns, so the source may be
    freed or changed at once. On MPS an asynchronous copy reads the source later, and a
    temporary freed (or a buffer reused) meanwhile gives the device wrong values; on the CPU
    and other backends there is nothing to overlap.
    """
    return torch.device(device).type == "cuda"


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``, asynchronously only where that is safe (``non_blocking_ok``)."""
    return t.to(device, non_blocking=non_blocking_ok(device))


@dataclass
class Batch:
    """One micro-batch. Tensors are [B, T] ``long``:

    ``input_ids``; ``labels`` (-100 for padding, masked prompt tokens and, when packed, the first
    token of every sample); ``attention_mask`` (1 real token, 0 padding); ``position_ids``
    (restarting at 0 for each packed sample); ``segment_ids`` (index of the packed sample a token
    belongs to within its row, -1 for padding; None when not packed). The counts are plain ints:
    ``n_tokens`` real tokens, ``n_trained_tokens`` labels != -100 after the causal shift.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor | None
    n_samples: int
    n_tokens: int
    n_trained_tokens: int

    @property
    def packed(self) -> bool:
        """True when rows hold several samples (``segment_ids`` is set)."""
        return self.segment_ids is not None

    def to(self, device: torch.device | str, non_blocking: bool | None = None) -> "Batch":
        """The same batch with its tensors on ``device`` (``non_blocking`` None: ``non_blocking_ok``)."""
        if non_blocking is None:
            non_blocking = non_blocking_ok(device)
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            move(self.input_ids), move(self.labels), move(self.attention_mask), move(self.position_ids),
            move(self.segment_ids), self.n_samples, self.n_tokens, self.n_trained_tokens,
        )


def pack_samples(lengths: Sequence[int], capacity: int, seed: int) -> list[list[int]]:
    """Rows of sample indices whose lengths sum to at most ``capacity``, deterministic for ``seed``.

    Best-fit decreasing: samples taken longest first (equal lengths in an order drawn from the
    seed), each placed in the open row with the least room that still fits it.
    """
    for i, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"sample {i} has {n} tokens, more than the row length {capacity}")
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: ties keep the shuffled order
    rows: list[list[int]] = []
    free: list[int] = []  # sorted room left in open rows
    by_free: dict[int, list[int]] = {}  # room left -> rows with that much room (a stack)
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, n)
        if k < len(free):
            room = free.pop(k)
            row = by_free[room].pop()
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        left = room - n
        if left > 0:
            bisect.insort(free, left)
            by_free.setdefault(left, []).append(row)
    return rows


def batches_per_epoch(rows: int, batch_size: int, world_size: int = 1) -> int:
    """Loader batches in an epoch of ``rows`` rows: global batches of ``batch_size`` x ``world_size``
    rows, the last one possibly short (``BatchLoader.__len__``, and the dataset statistics)."""
    return math.ceil(rows / (batch_size * world_size))


def padded_width(longest: int, pad_to_multiple_of: int, max_seq_length: int) -> int:
    """Width of a batch whose longest row has ``longest`` tokens: rounded up to a multiple of
    ``pad_to_multiple_of``, but never past ``max_seq_length`` (nor below ``longest``)."""
    rounded = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    return max(longest, min(rounded, max_seq_length))


def samples_fingerprint(samples: Sequence[Sample]) -> str:
    """SHA-256 over every sample's ids and labels: tells whether a checkpoint's dataset is this one."""
    h = hashlib.sha256()
    h.update(len(samples).to_bytes(8, "little"))
    for s in samples:
        h.update(len(s.input_ids).to_bytes(4, "little"))
        h.update(array("q", s.input_ids).tobytes())
        h.update(array("q", s.labels).tobytes())
    return h.hexdigest()


class BatchLoader:
    """Iterates over ``Batch``es of ``samples``; resumable from ``state_dict()``.

    Iterating yields the remaining batches of the current epoch, from the current position;
    iterating again after the epoch ended starts the next epoch. ``set_epoch(e)`` jumps to the
    start of epoch ``e``. Shuffling draws from ``(seed, epoch)`` with a private generator and
    never touches the global random state. ``len()`` is the number of batches per epoch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        *,
        pad_id: int,
        max_seq_length: int,
        packing: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        pad_to_multiple_of: int = 8,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if pad_id is None:
            raise ValueError("pad_id is required: the tokenizer has neither a pad nor an EOS token")
        for s in samples:
            if len(s) > max_seq_length:
                raise ValueError(f"{s.source}: {len(s)} tokens, more than max_seq_length {max_seq_length}")
        self.samples = list(samples)
        self.batch_size = batch_size
        self.pad_id = int(pad_id)
        self.max_seq_length = max_seq_length
        self.packing = packing
        self.shuffle = shuffle
        self.seed = seed
        self.pad_to_multiple_of = max(1, pad_to_multiple_of)
        if packing:
            self.rows = pack_samples([len(s) for s in self.samples], max_seq_length, seed)
        else:
            self.rows = [[i] for i in range(len(self.samples))]
        self.fingerprint = samples_fingerprint(self.samples)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        # Data parallel: one loader batch is a global batch of batch_size x world_size rows;
        # this rank collates its own disjoint slice of it (see ``_rank_rows``).
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.index = 0  # batches of this epoch already handed out

    def __len__(self) -> int:
        return batches_per_epoch(len(self.rows), self.batch_size, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (0-based) from its first batch."""
        self.epoch = epoch
        self.index = 0

    def epoch_order(self, epoch: int) -> list[int]:
        """Row order of ``epoch``: a permutation drawn from (seed, epoch) when shuffling."""
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def __iter__(self) -> Iterator[Batch]:
        if self.index >= len(self):
            self.set_epoch(self.epoch + 1)
        epoch = self.epoch
        order = self.epoch_order(epoch)
        step = self.batch_size * self.world_size
        while self.epoch == epoch and self.index < len(self):
            start = self.index * step
            self.index += 1
            yield self._rank_batch([self.rows[r] for r in order[start:start + step]])

    def _rank_batch(self, rows: list[list[int]]) -> Batch:
        """This rank's contiguous share of a global batch's ``rows`` (sizes differ by at most one).

        A rank left without a row (a last global batch with fewer rows than ranks) gets a copy of
        the first row with every label ignored: it still runs forward and backward, as DDP needs,
        and adds nothing to the loss, the gradient or the counts.
        """
        if self.world_size == 1:
            return self.collate(rows)
        q, r = divmod(len(rows), self.world_size)
        begin = self.rank * q + min(self.rank, r)
        mine = rows[begin:begin + q + (1 if self.rank < r else 0)]
        if mine:
            return self.collate(mine)
        empty = self.collate(rows[:1])
        empty.labels.fill_(IGNORE_INDEX)
        return Batch(empty.input_ids, empty.labels, empty.attention_mask, empty.position_ids, empty.segment_ids, 0, 0, 0)

    def collate(self, rows: list[list[int]]) -> Batch:
        """A batch of ``rows`` (each a list of sample indices, packed one after another)."""
        seqs = [[self.samples[i] for i in row] for row in rows]
        width = padded_width(max(sum(len(s) for s in seq) for seq in seqs), self.pad_to_multiple_of, self.max_seq_length)
        b = len(rows)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((b, width), dtype=torch.long)
        position_ids = torch.zeros((b, width), dtype=torch.long)
        segment_ids = torch.full((b, width), -1, dtype=torch.long) if self.packing else None
        for r, seq in enumerate(seqs):
            at = 0
            for k, s in enumerate(seq):
                n = len(s)
                input_ids[r, at:at + n] = torch.tensor(s.input_ids, dtype=torch.long)
                labels[r, at:at + n] = torch.tensor(s.labels, dtype=torch.long)
                if self.packing:
                    labels[r, at] = IGNORE_INDEX
                    segment_ids[r, at:at + n] = k
                position_ids[r, at:at + n] = torch.arange(n)
                at += n
            attention_mask[r, :at] = 1
            if at < width:  # padding continues the positions of the last sample
                position_ids[r, at:] = torch.arange(at, width) - (at - len(seq[-1]))
        n_trained = int((labels[:, 1:] != IGNORE_INDEX).sum())
        return Batch(input_ids, labels, attention_mask, position_ids, segment_ids,
                     sum(len(seq) for seq in seqs), int(attention_mask.sum()), n_trained)

    def state_dict(self) -> dict[str, Any]:
        """Position to resume from: epoch, batches already handed out, seed, dataset fingerprint."""
        return {
            "epoch": self.epoch, "batch_index": self.index, "seed": self.seed, "fingerprint": self.fingerprint,
            "batch_size": self.batch_size, "packing": self.packing, "shuffle": self.shuffle,
            "num_batches": len(self), "rank": self.rank, "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken; ValueError when it belongs to other data or settings."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "The data-loader state was saved for a different dataset (the samples' fingerprint differs); "
                "resume with the same dataset, tokenizer and max_seq_length, or start a new run"
            )
        for key in ("seed", "batch_size", "packing", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"The data-loader state was saved with {key}={state[key]!r}, not {getattr(self, key)!r}; "
                                 "resume with the same settings")
        index = int(state["batch_index"])
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            # Another number of processes: keep the rows of this epoch already trained (rounded
            # down to whole global batches of the new size); not bitwise the same as before.
            done = index >= int(state.get("num_batches", index + 1))  # the epoch was complete
            index = len(self) if done else min(len(self), index * saved_world // self.world_size)
        if not 0 <= index <= len(self):
            raise ValueError(f"The data-loader state has batch index {index}, outside 0..{len(self)}")
        self.epoch = int(state["epoch"])
        self.index = index


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [B, 1, T, T] in ``dtype``: 0 where query t may attend key s (same segment, s <= t),
    the dtype's lowest value elsewhere. Padding tokens (segment -1) attend only to themselves, so no
    row is fully masked and no NaN appears."""
    t = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    real = (segment_ids >= 0)[:, :, None]
    eye = torch.eye(t, dtype=torch.bool, device=segment_ids.device)
    allowed = (same & causal & real) | eye
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def model_inputs(batch: Batch, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Keyword arguments for a Hugging Face causal LM's forward: ``input_ids`` [B, T],
    ``position_ids`` [B, T] and ``attention_mask``: the 2D padding mask [B, T] for unpacked
    batches, a 4D additive block-diagonal causal mask [B, 1, T, T] in ``dtype`` for packed ones
    (accepted as-is by transformers' eager and sdpa attention; not by flash-attention)."""
    if batch.segment_ids is None:
        mask = batch.attention_mask
    else:
        mask = block_causal_mask(batch.segment_ids, dtype)
    return {"input_ids": batch.input_ids, "position_ids": batch.position_ids, "attention_mask": mask}
