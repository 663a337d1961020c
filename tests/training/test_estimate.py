"""The pre-flight estimate against real runs: steps, trainable parameters, peak memory, and the
advice it gives when a job cannot fit."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from senior_intern.config import LoraBias, TrainingJob
from senior_intern.models import dequant
from senior_intern.models.quantized import INTEGER_KINDS
from senior_intern.training.engine import Trainer
from senior_intern.training.estimate import TrainingEstimate, estimate

GB = 1024**3

# A fresh interpreter trains the job and reports how far its resident memory grew above what the
# imports alone take (the honest measure of what a run adds on the CPU). One thread each, so two
# runs side by side do not oversubscribe the cores; the peak does not depend on it (measured on
# the demo model at 1 x 128: 952 MB with one thread, 961 MB with two).
MEASURE_CHILD = """
import json, sys
import psutil, torch, transformers
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM, AutoTokenizer
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
job = TrainingJob.load(sys.argv[1])
base = psutil.Process().memory_info().rss
result = Trainer().run(job)
from senior_intern.hardware.monitor import peak_rss_bytes
peak = peak_rss_bytes()  # not ru_maxrss: a child inherits its parent's (the test session's) peak
print(json.dumps({"status": result.status.value, "error": result.error_message, "growth": peak - base}))
"""


@pytest.fixture(scope="module")
def demo_model(demo_gguf: Path) -> Path:
    """The demo GGUF, converted into this session's model cache once (later loads take a second)."""
    from senior_intern.models import load_base_model

    load_base_model(demo_gguf)
    return demo_gguf


def _text_corpus(path: Path, words: int) -> Path:
    rng = random.Random(0)
    vocab = "def class return import self value index count total result print list for while if else".split()
    path.write_text(" ".join(rng.choice(vocab) for _ in range(words)), encoding="utf-8")
    return path


def _demo_job(model: Path, data: Path, out: Path, batch: int, seq: int, **training) -> TrainingJob:
    job = TrainingJob(name=f"demo-{batch}x{seq}", base_model_path=str(model), dataset_path=str(data),
                      output_dir=str(out / "runs"), adapters_dir=str(out / "adapters"), validation_split=0.0)
    t = job.training
    t.batch_size, t.max_seq_length, t.device, t.dtype = batch, seq, "cpu", "float32"
    t.max_steps, t.warmup_steps, t.eval_every, t.save_every, t.early_stopping_patience = 2, 1, 0, 0, 0
    for key, value in training.items():
        setattr(t, key, value)
    job.data.window_overlap = 0
    return job


# --- trainable parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("lora", [
    {},
    {"target_modules": ["all-linear"], "bias": LoraBias.ALL},
    {"target_modules": ["q_proj", "v_proj"], "apply_to_embeddings": True, "rank": 2},
])
def test_trainable_parameters_equal_lora_model_on_the_tiny_model(tiny_job: TrainingJob, lora: dict) -> None:
    from senior_intern.lora import LoraModel
    from senior_intern.models import load_base_model

    for key, value in lora.items():
        setattr(tiny_job.lora, key, value)
    real = LoraModel(load_base_model(tiny_job.base_model_path).model, tiny_job.lora)
    est = estimate(tiny_job)
    assert est.trainable_parameters == real.trainable_parameter_count
    assert est.total_parameters == real.total_parameter_count


def test_trainable_parameters_of_the_demo_model_at_rank_16(demo_model: Path, tmp_path: Path) -> None:
    job = _demo_job(demo_model, _text_corpus(tmp_path / "c.txt", 400), tmp_path, 1, 128)
    job.lora.rank = 16
    # SmolLM2-135M: 30 layers, hidden 576, 3 KV heads of 64 (192), MLP 1536; r * (in + out) per module.
    per_layer = 16 * ((576 + 576) + (576 + 192) * 2 + (576 + 576) + (576 + 1536) * 2 + (1536 + 576))
    assert estimate(job).trainable_parameters == 30 * per_layer == 4_884_480


def test_a_compact_base_pays_its_dequantisation_per_pass(demo_model: Path, tmp_path: Path) -> None:
    """The demo's 106M Q4_1 decoder weights are dequantised in forward and backward (and again when
    checkpointing recomputes), its Q8_0 tied head per loss chunk of trained rows, twice."""
    from senior_intern.training import estimate_model as em

    job = _demo_job(demo_model, _text_corpus(tmp_path / "c.txt", 400), tmp_path, 1, 512)
    facts = em.model_facts(job, torch.float32)
    assert facts.compact_decoder == (("Q4_1", 106_168_320),) and facts.compact_head == ("Q8_0", 49152 * 576)
    decoder, head = em.DEQUANT_FLOPS["Q4_1"] * 106_168_320, em.DEQUANT_FLOPS["Q8_0"] * 49152 * 576
    shape = em.StepShape(1, 512, torch.float32, 0.0, True, False, 1024)
    assert em.dequant_flops(facts, shape, 1.0) == 2 * decoder + 2 * head
    assert em.dequant_flops(facts, shape, 1.0, backward=False) == decoder + head
    checkpointed = dataclasses.replace(shape, checkpointing=True, loss_chunk=128)  # four chunks of 128 rows
    assert em.dequant_flops(facts, checkpointed, 1.0) == 3 * decoder + 4 * 2 * head
    assert set(em.DEQUANT_FLOPS) >= set(dequant.SUPPORTED) | set(INTEGER_KINDS)  # every kind a base can hold


def test_a_float_base_pays_no_dequantisation(tiny_job: TrainingJob) -> None:
    from senior_intern.training import estimate_model as em

    facts = em.model_facts(tiny_job, torch.float32)
    assert facts.compact_decoder == () and facts.compact_head is None
    assert em.dequant_flops(facts, em.StepShape(4, 64, torch.float32, 0.0, False, False, 1024), 1.0) == 0
    tiny_job.training.base_quantization = "int8"  # decoder linears only: the head stays float
    facts = em.model_facts(tiny_job, torch.float32)
    assert [kind for kind, _ in facts.compact_decoder] == ["int8"] and facts.compact_head is None


# --- steps -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {},
    {"packing": True, "batch_size": 3, "gradient_accumulation_steps": 2, "epochs": 3},
    {"max_steps": 5, "epochs": 4},
])
def test_total_steps_equal_what_a_run_reports(tiny_job: TrainingJob, changes: dict) -> None:
    for key, value in changes.items():
        setattr(tiny_job.training, key, value)
    tiny_job.training.eval_every = tiny_job.training.save_every = 0
    est = estimate(tiny_job)
    result = Trainer().run(tiny_job)
    assert result.error_message is None
    assert est.total_steps == result.total_steps
    assert est.steps_per_epoch * tiny_job.training.epochs >= est.total_steps


# --- memory against measurement -------------------------------------------------------------------

def test_peak_memory_is_within_20_percent_of_measured_runs(demo_model: Path, tmp_path: Path) -> None:
    data = _text_corpus(tmp_path / "corpus.txt", 3000)
    jobs = [_demo_job(demo_model, data, tmp_path / f"s{i}", b, s) for i, (b, s) in enumerate([(1, 128), (2, 256)])]
    children = []
    for i, job in enumerate(jobs):  # both runs at once: each peak is its own process's
        path = job.save(tmp_path / f"job{i}.toml")
        children.append(subprocess.Popen([sys.executable, "-c", MEASURE_CHILD, str(path)], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=dict(os.environ)))
    estimates = [estimate(job) for job in jobs]
    for job, est, child in zip(jobs, estimates, children):
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-2000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["status"] == "Completed", report["error"]
        assert est.sequence_length == job.training.max_seq_length
        error = (est.peak_memory - report["growth"]) / report["growth"]
        # Measured after the recalibration for compact GGUF bases (#14): -7..+9% at 1 x 128 (its
        # peak varies by about 100 MB between runs) and +2..+6% at 2 x 256.
        assert abs(error) < 0.20, (job.name, est.peak_memory, report["growth"], est.memory)


def test_memory_grows_with_batch_and_shrinks_with_checkpointing_and_bfloat16(demo_model: Path, tmp_path: Path) -> None:
    data = _text_corpus(tmp_path / "corpus.txt", 3000)
    base = estimate(_demo_job(demo_model, data, tmp_path, 2, 256))
    bigger = estimate(_demo_job(demo_model, data, tmp_path, 4, 256))
    ckpt = estimate(_demo_job(demo_model, data, tmp_path, 2, 256, gradient_checkpointing=True))
    bf16 = estimate(_demo_job(demo_model, data, tmp_path, 2, 256, dtype="bfloat16"))
    assert bigger.memory.activations > 1.9 * base.memory.activations
    # On the CPU glibc keeps some of the recomputed layers' freed buffers: checkpointing saves about 70%.
    assert 0.2 * base.memory.activations < ckpt.memory.activations < 0.5 * base.memory.activations
    assert 0.5 * base.memory.weights < bf16.memory.weights < base.memory.weights  # only the dense part halves: the GGUF blocks stay
    assert bf16.memory.lora_parameters == base.memory.lora_parameters  # LoRA factors stay float32
    assert base.memory.optimizer_state == 2 * base.memory.lora_parameters  # AdamW: two states
    assert base.peak_memory == sum(size for _, size in base.memory.items())


# --- when a job cannot fit -------------------------------------------------------------------------

def test_an_enormous_batch_is_flagged_with_a_batch_size_that_fits(demo_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "many.jsonl"
    records = [{"prompt": f"Say {i}", "completion": f" {i}"} for i in range(4100)]
    records.append({"text": _text_corpus(tmp_path / "long.txt", 3000).read_text()})
    data.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    job = _demo_job(demo_model, data, tmp_path, 4096, 2048, packing=False)
    est = estimate(job)
    assert not est.fits and est.sequence_length == 2048
    assert est.peak_memory > est.available_memory
    assert 1 <= est.recommended_batch_size < 4096 and est.recommended_device == "cpu"
    assert any("batch_size" in w and f"to {est.recommended_batch_size}" in w for w in est.warnings), est.warnings
    smaller = dataclasses.replace(job, training=dataclasses.replace(job.training, batch_size=est.recommended_batch_size))
    assert estimate(smaller).fits


def test_a_sequence_too_long_for_any_batch_asks_for_a_shorter_one(tiny_job: TrainingJob, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # One row of 2^18 tokens on a machine with 256 MiB free: more than that even at batch 1.
    import senior_intern.training.estimate as estimate_module

    monkeypatch.setattr(estimate_module, "_available", lambda device: 256 * 2**20)
    data = _text_corpus(tmp_path / "long.txt", 400_000)
    tiny_job.dataset_path, tiny_job.validation_split = str(data), 0.0
    t = tiny_job.training
    t.max_seq_length, t.packing, t.batch_size = 2**18, True, 1
    tiny_job.data.window_overlap = 0
    est = estimate(tiny_job)
    assert est.peak_memory > 256 * 2**20 and est.available_memory == 256 * 2**20
    assert not est.fits and est.recommended_batch_size == 0
    assert any("even at batch_size 1" in w and "max_seq_length to" in w for w in est.warnings), est.warnings
    assert any("context length" in w for w in est.warnings)


# --- other warnings, disk, time, probe ------------------------------------------------------------

def test_warns_about_warmup_longer_than_the_run_and_a_very_long_run(tiny_job: TrainingJob) -> None:
    tiny_job.training.warmup_steps = 1000
    est = estimate(tiny_job)
    assert any("warmup_steps (1000)" in w for w in est.warnings)
    assert not any("would take" in w for w in est.warnings)
    tiny_job.training.epochs = 10_000_000
    assert any("would take about" in w and "max_steps" in w for w in estimate(tiny_job).warnings)


def test_warns_about_truncated_samples(tiny_job: TrainingJob, tmp_path: Path) -> None:
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"prompt": "def add", "completion": " return " * 200}) + "\n", encoding="utf-8")
    tiny_job.dataset_path, tiny_job.validation_split = str(data), 0.0
    est = estimate(tiny_job)
    assert any("truncated" in w and "max_seq_length" in w for w in est.warnings)
    assert est.sequence_length == tiny_job.training.max_seq_length


def test_disk_and_duration(tiny_job: TrainingJob) -> None:
    est = estimate(tiny_job)
    adapter = est.trainable_parameters * 4
    checkpoints = tiny_job.training.max_checkpoints + 1  # + best, since the job has validation data
    assert checkpoints * 3 * adapter + adapter < est.disk_bytes < checkpoints * 3 * adapter + adapter + 8 * 2**20
    assert est.duration_method == "flops" and est.seconds_per_step > 0
    assert est.duration_seconds >= est.total_steps * est.seconds_per_step
    assert est.tokens_per_step > 0 and est.device == "cpu" and est.dtype == "float32"


def test_probe_times_real_steps_in_a_fresh_process(tiny_job: TrainingJob) -> None:
    est = estimate(tiny_job, probe=True)
    assert isinstance(est, TrainingEstimate)
    assert est.duration_method == "probe" and 0 < est.seconds_per_step < 30
    assert est.measured_peak_memory is not None and est.measured_peak_memory > 0
    assert not (Path(tiny_job.output_dir) / "probe").exists()  # the probe ran in a temporary folder


def test_missing_paths_name_the_setting(tiny_job: TrainingJob, tmp_path: Path) -> None:
    tiny_job.dataset_path = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="dataset_path"):
        estimate(tiny_job)
    tiny_job.base_model_path = ""
    with pytest.raises(FileNotFoundError, match="base_model_path"):
        estimate(tiny_job)


def test_matmul_rate_is_the_best_this_machine_has_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from senior_intern.training import estimate_model as em

    monkeypatch.setenv("SENIOR_INTERN_HOME", str(tmp_path))
    readings = iter([100e9, 60e9, 150e9])  # a quiet machine, a busy one, a quieter one
    monkeypatch.setattr(em, "measure_matmul", lambda *args: next(readings))
    rates = []
    for _ in range(3):
        em.matmul_flops_per_second.cache_clear()  # each call stands for a new process
        rates.append(em.matmul_flops_per_second("cpu", torch.float32, 64, 32, 32))
    em.matmul_flops_per_second.cache_clear()
    assert rates == [100e9, 100e9, 150e9]
    stored = json.loads((tmp_path / "cache" / em.RATES_FILE).read_text())
    assert list(stored.values()) == [150e9] and "float32" in next(iter(stored))
    (tmp_path / "cache" / em.RATES_FILE).write_text("not json")  # a damaged file is measured over
    monkeypatch.setattr(em, "measure_matmul", lambda *args: 70e9)
    assert em.matmul_flops_per_second("cpu", torch.float32, 64, 32, 32) == 70e9
    em.matmul_flops_per_second.cache_clear()
