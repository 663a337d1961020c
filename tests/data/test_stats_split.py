"""Statistics, the token preview, the validation split, training data for a job, the bundled sample."""

from __future__ import annotations

import ast
import json
import math
import re

import pytest

from senior_intern.config import DatasetFormat, TrainingJob
from senior_intern.data import (
    IGNORE_INDEX,
    BatchLoader,
    Sample,
    dataset_stats,
    load_dataset,
    load_training_data,
    preview,
    split,
)
from senior_intern.defaults import sample_dataset_path
from tests.data.conftest import write_jsonl


@pytest.fixture
def loaded(tmp_path, tiny_tokenizer):
    records = [{"instruction": f"Task {i}.", "output": "def f():\n    return " + "1 + " * i + "1\n"} for i in range(10)]
    return load_dataset(write_jsonl(tmp_path / "data.jsonl", records), tiny_tokenizer, None, 64)


def test_dataset_stats(loaded):
    stats = dataset_stats(loaded, batch_size=3, max_seq_length=64, packing=False)
    lengths = [len(s) for s in loaded.samples]
    assert stats.n_samples == 10 and stats.format == "alpaca" and stats.records == 10
    assert stats.max_length == max(lengths) and stats.min_length == min(lengths)
    assert stats.mean_length == pytest.approx(sum(lengths) / 10)
    assert stats.total_tokens == sum(lengths)
    assert stats.trained_tokens == sum(s.n_trained for s in loaded.samples)
    assert 0 < stats.trained_fraction < 1
    assert stats.batches_per_epoch == 4 and stats.rows == 10 and stats.packed_fill is None
    assert sum(b.count for b in stats.histogram) == 10 and len(stats.histogram) == 10
    for b in stats.histogram:
        assert b.count == sum(b.low <= n < b.high for n in lengths)
    packed = dataset_stats(loaded, batch_size=3, max_seq_length=128, packing=True)
    loader = BatchLoader(loaded.samples, 3, pad_id=0, max_seq_length=128, packing=True)
    assert packed.rows == len(loader.rows) < 10
    assert packed.batches_per_epoch == len(loader) == math.ceil(packed.rows / 3)
    assert packed.packed_fill == pytest.approx(sum(lengths) / (packed.rows * 128))
    with pytest.raises(ValueError, match="batch_size"):
        dataset_stats(loaded, 0, 64, False)


def test_preview_marks_trained_and_masked_pieces(loaded, tiny_tokenizer):
    s = loaded.samples[2]
    pieces = preview(s, tiny_tokenizer)
    assert [trained for _, trained in pieces] == [False, True]
    assert "".join(text for text, _ in pieces) == tiny_tokenizer.decode(s.input_ids)
    assert pieces[1][0] == "def f():\n    return 1 + 1 + 1\n<|im_end|>"
    chat = Sample([5, 6, 7, 8, 9], [IGNORE_INDEX, 6, IGNORE_INDEX, 8, 9], "x")
    assert [t for _, t in preview(chat, tiny_tokenizer)] == [False, True, False, True]


def _samples(n, windows_of=None):
    out = [Sample([i + 1, i + 2], [IGNORE_INDEX, i + 2], f"d.jsonl:{i + 1}") for i in range(n)]
    if windows_of:
        out += [Sample([1, 2], [IGNORE_INDEX, 2], f"big.py#window{k + 1}", group="big.py") for k in range(windows_of)]
    return out


def test_split_is_deterministic_and_keeps_order():
    samples = _samples(20)
    train, val = split(samples, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert split(samples, 0.25, seed=3) == (train, val)
    assert split(samples, 0.25, seed=4)[1] != val
    assert sorted(train + val, key=samples.index) == samples
    assert [samples.index(s) for s in train] == sorted(samples.index(s) for s in train)
    assert split(samples, 0.0, 1) == (samples, [])
    assert [len(x) for x in split(_samples(2), 0.01, 1)] == [1, 1]  # at least one each
    assert split(_samples(1), 0.5, 1) == (_samples(1), [])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split(samples, 1.0, 0)


def test_split_keeps_windows_of_a_file_together():
    samples = _samples(10, windows_of=3)
    for seed in range(10):
        _, val = split(samples, 0.3, seed)
        windows = [s for s in val if "#window" in s.source]
        assert len(windows) in (0, 3)


def test_load_training_data_split_and_validation_file(tmp_path, tiny_tokenizer):
    data = write_jsonl(tmp_path / "train.jsonl", [{"text": f"sample {i}"} for i in range(20)])
    job = TrainingJob(name="t", dataset_path=str(data), validation_split=0.2)
    job.training.max_seq_length = 32
    td = load_training_data(job, tiny_tokenizer)
    assert len(td.train) == 16 and len(td.validation) == 4 and td.validation_dataset is None
    assert td.messages[0].text.startswith("Loaded 20 samples (text) from") and "Held out 4 of 20" in td.messages[-1].text
    assert not any(m.lost for m in td.messages)
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "held out"}, "{bad"])
    job.validation_path = str(val)
    job.data.skip_malformed = True
    td = load_training_data(job, tiny_tokenizer)
    assert len(td.train) == 20 and len(td.validation) == 1
    skipped = [m for m in td.messages if m.text.startswith("Validation: 1 records skipped")]
    assert skipped and all(m.lost for m in skipped)  # the run log shows lost data as a warning
    job.validation_path, job.validation_split = None, 0.0
    assert load_training_data(job, tiny_tokenizer).validation == []


def test_bundled_sample_dataset(tiny_tokenizer):
    path = sample_dataset_path()
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert 60 <= len(records) <= 100
    for r in records:
        assert set(r) == {"instruction", "input", "output"}
        code = re.fullmatch(r"[^\n]+\.\n\n```python\n(.*)\n```", r["output"], re.DOTALL)
        assert code is not None, r["output"]  # one sentence, then one Python block
        ast.parse(code.group(1))
    loaded = load_dataset(path, tiny_tokenizer, None, 512)
    assert loaded.format == DatasetFormat.ALPACA and len(loaded.samples) == len(records) and not loaded.problems


def test_split_falls_back_to_windows_when_every_file_is_too_big():
    samples = [Sample([1, 2], [IGNORE_INDEX, 2], f"big.py#window{k + 1}", group="big.py") for k in range(10)]
    train, val = split(samples, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
