"""The dataset side of the estimate: steps and batch shapes, counted as a run counts them.

``data_facts(job)`` loads and tokenises the job's data with the model's tokenizer (cached per
process for the same files and data settings, so editing batch size or epochs costs nothing),
builds the ``BatchLoader`` a run builds, plans its steps with ``plan.plan_run`` as the run does,
and reads the padded width of its batches (``loader.padded_width``, as ``collate`` pads).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senior_intern.config import TrainingJob
from senior_intern.data import BatchLoader, load_training_data
from senior_intern.data.loader import padded_width
from senior_intern.models.tokenizer import load_tokenizer
from senior_intern.training.plan import pad_token_id, plan_run


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
           d.skip_malformed, tuple(d.column_map))
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
        out.append((len(chunk), padded_width(longest, loader.pad_to_multiple_of, loader.max_seq_length)))
    return out


def data_facts(job: TrainingJob) -> DataFacts:
    """Steps from the same ``plan_run`` as ``Session.prepare`` (one process), and the batch shapes of an epoch."""
    t = job.training
    data = _load_data(job)
    tok = load_tokenizer(job.base_model_path)
    common = dict(pad_id=pad_token_id(tok), max_seq_length=t.max_seq_length, packing=t.packing, seed=t.seed)
    loader = BatchLoader(data.train, t.batch_size, shuffle=True, **common)
    plan = plan_run(job, tok, data.train, len(loader))
    batches = _batches(loader)
    total_tokens = plan.tokens
    trained = sum(s.n_trained for s in data.train)
    val = _batches(BatchLoader(data.validation, t.batch_size, shuffle=False, **common)) if data.validation else []
    truncated = data.dataset.truncated + (data.validation_dataset.truncated if data.validation_dataset else 0)
    return DataFacts(plan.steps_per_epoch, plan.total_steps, len(loader.rows), max(w for _, w in batches),
                     sum(b * w for b, w in batches) / len(batches), trained / total_tokens if total_tokens else 0.0,
                     sum(b * w for b, w in val), len(val), truncated)
