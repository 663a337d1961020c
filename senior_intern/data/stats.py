"""What a dataset looks like before training: lengths, trained share, steps; and a token preview."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from senior_intern.data.dataset import LoadedDataset
from senior_intern.data.loader import batches_per_epoch, pack_samples
from senior_intern.data.tokenize import IGNORE_INDEX, Sample


@dataclass(frozen=True)
class LengthBin:
    """Samples whose token length is in ``[low, high)``."""

    low: int
    high: int
    count: int


@dataclass
class DatasetStats:
    """Summary of a loaded dataset for one batch size, sequence length and packing choice."""

    n_samples: int
    format: str
    records: int
    skipped: int
    truncated: int
    mean_length: float
    max_length: int
    min_length: int
    total_tokens: int
    trained_tokens: int
    batches_per_epoch: int  # loader batches per epoch (one process), before gradient accumulation
    rows: int  # sequences per epoch: samples, or packed rows when packing
    packing: bool
    packed_fill: float | None = None  # packing: real tokens / (rows x max_seq_length)
    histogram: list[LengthBin] = field(default_factory=list)

    @property
    def trained_fraction(self) -> float:
        """Share of tokens the loss trains on (0..1)."""
        return self.trained_tokens / self.total_tokens if self.total_tokens else 0.0


def length_histogram(lengths: Sequence[int], max_seq_length: int, bins: int = 10) -> list[LengthBin]:
    """``bins`` equal-width bins from 0 to ``max_seq_length`` (the last one includes the maximum)."""
    width = max(1, math.ceil(max_seq_length / bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(n // width, bins - 1)] += 1
    return [LengthBin(k * width, (k + 1) * width if k < bins - 1 else max_seq_length + 1, c) for k, c in enumerate(counts)]


def dataset_stats(loaded: LoadedDataset, batch_size: int, max_seq_length: int, packing: bool, seed: int = 0) -> DatasetStats:
    """Lengths, trained share and batches per epoch of ``loaded`` (packing counts packed rows)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    samples = loaded.samples
    lengths = [len(s) for s in samples]
    total = sum(lengths)
    trained = sum(s.n_trained for s in samples)
    if packing:
        rows = len(pack_samples([min(n, max_seq_length) for n in lengths], max_seq_length, seed))
    else:
        rows = len(samples)
    return DatasetStats(
        n_samples=len(samples),
        format=loaded.format.value,
        records=loaded.records,
        skipped=loaded.skipped,
        truncated=loaded.truncated,
        mean_length=total / len(samples) if samples else 0.0,
        max_length=max(lengths, default=0),
        min_length=min(lengths, default=0),
        total_tokens=total,
        trained_tokens=trained,
        batches_per_epoch=batches_per_epoch(rows, batch_size),
        rows=rows,
        packing=packing,
        packed_fill=total / (rows * max_seq_length) if packing and rows else None,
        histogram=length_histogram(lengths, max_seq_length),
    )


def preview(sample: Sample, tokenizer: Any) -> list[tuple[str, bool]]:
    """The sample's text as ``(piece, trained)`` runs: consecutive tokens with the same status are decoded
    together (the GUI highlights trained pieces and dims masked ones)."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    ids, labels = sample.input_ids, sample.labels
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            pieces.append((text, labels[start] != IGNORE_INDEX))
            start = i
    return pieces
