"""The dataset side of the estimate: steps and batch shapes, counted as a run counts them.

``data_facts(job)`` loads and tokenises the job's data with the model's tokenizer (cached per
process for the same files and data settings, so editing batch size or epochs costs nothing),
builds the ``BatchLoader`` a run builds, and reads its steps and the padded width of its batches.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senior_intern.config import TrainingJob
from senior_intern.data import BatchLoader, load_training_data
from senior_intern.models.tokenizer import load_tokenizer


@dataclass(frozen=True)
class DataFacts:
    """Steps of the job and the shapes of its batches (epoch 0's order)."""

    steps_per_epoch: int
    total_steps: int
    rows: int
    width: int  # padded width of the widest batch
    tokens_per_batch: float  # padded positions per micro-batch, averaged over an epoch
    trained_fraction: float
    val_tokens: int  # padded positions of one evaluation pass
    val_batches: int
    truncated: int


def _signature(path: str | None) -> tuple:
    """Cheap fingerprint of a file or folder tree (names, sizes, mtimes)."""
    if not path:
        return ()
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return (str(p), st.st_size, st.st_mtime_ns)
    entries = []
    for root, _, files in os.walk(p):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            entries.append((root, name, st.st_size, st.st_mtime_ns))
    return (str(p), hash(tuple(sorted(entries))))


_DATA_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_DATA_LOCK = threading.Lock()


def _load_data(job: TrainingJob):
    """``load_training_data`` for the job, cached per process for the same files and data settings."""
    t, d = job.training, job.data
    key = (job.base_model_path, _signature(job.dataset_path), _signature(job.validation_path), job.validation_split,
           t.seed, t.max_seq_length, str(d.format), tuple(d.code_extensions), d.window_overlap, d.max_file_bytes,
           d.skip_malformed)
    with _DATA_LOCK:
        if key in _DATA_CACHE:
            _DATA_CACHE.move_to_end(key)
            return _DATA_CACHE[key]
    data = load_training_data(job, load_tokenizer(job.base_model_path))
    with _DATA_LOCK:
        _DATA_CACHE[key] = data
        while len(_DATA_CACHE) > 4:
            _DATA_CACHE.popitem(last=False)
    return data


def _batches(loader: BatchLoader) -> list[tuple[int, int]]:
    """(rows, padded width) of each batch of epoch 0, as ``BatchLoader.collate`` pads them."""
    lengths = [sum(len(loader.samples[i]) for i in row) for row in loader.rows]
    order = loader.epoch_order(0)
    out = []
    for start in range(0, len(order), loader.batch_size):
        chunk = order[start:start + loader.batch_size]
        longest = max(lengths[r] for r in chunk)
        padded = -(-longest // loader.pad_to_multiple_of) * loader.pad_to_multiple_of
        out.append((len(chunk), max(longest, min(padded, loader.max_seq_length))))
    return out


def data_facts(job: TrainingJob) -> DataFacts:
    """Steps exactly as ``Session.prepare`` counts them, and the batch shapes of an epoch."""
    t = job.training
    data = _load_data(job)
    tok = load_tokenizer(job.base_model_path)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    common = dict(pad_id=pad_id, max_seq_length=t.max_seq_length, packing=t.packing, seed=t.seed)
    loader = BatchLoader(data.train, t.batch_size, shuffle=True, **common)
    steps_per_epoch = math.ceil(len(loader) / t.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"The dataset {job.dataset_path} gives no training batch; add data or lower batch_size")
    total = steps_per_epoch * t.epochs if t.max_steps is None else min(steps_per_epoch * t.epochs, t.max_steps)
    batches = _batches(loader)
    total_tokens = sum(len(s) for s in data.train)
    trained = sum(s.n_trained for s in data.train)
    val = _batches(BatchLoader(data.validation, t.batch_size, shuffle=False, **common)) if data.validation else []
    truncated = data.dataset.truncated + (data.validation_dataset.truncated if data.validation_dataset else 0)
    return DataFacts(steps_per_epoch, total, len(loader.rows), max(w for _, w in batches),
                     sum(b * w for b, w in batches) / len(batches), trained / total_tokens if total_tokens else 0.0,
                     sum(b * w for b, w in val), len(val), truncated)
