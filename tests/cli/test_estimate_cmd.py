"""``senior-intern estimate``: the same job options as ``train``, a readable report, JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from senior_intern.cli import main
from senior_intern.config import TrainingJob
from senior_intern.training import estimate as estimate_module
from senior_intern.training.estimate import MemoryBreakdown, TrainingEstimate


def _args(job: TrainingJob) -> list[str]:
    t = job.training
    return ["estimate", "--model", job.base_model_path, "--data", job.dataset_path, "--output", job.output_dir,
            "--name", "cli-est", "--device", "cpu", "--dtype", "float32", "--batch-size", str(t.batch_size),
            "--max-seq-length", str(t.max_seq_length), "--epochs", "2", "--rank", "4", "--validation-split", "0.25",
            "--warmup-steps", "1", "--no-packing"]


def test_prints_steps_parameters_memory_duration_and_fit(tiny_job: TrainingJob, capsys: pytest.CaptureFixture) -> None:
    assert main(_args(tiny_job)) == 0
    out = capsys.readouterr().out
    for text in ("Estimate for cli-est on cpu (float32)", "Steps: 18 (9 per epoch)", "Trainable parameters:",
                 "Peak memory:", "fits", "base weights", "activations", "optimizer state", "Disk:", "Duration: about",
                 "Recommended: device cpu, batch size up to"):
        assert text in out, out
    assert "warning:" not in out


def test_reads_a_job_file_and_prints_json(tiny_job: TrainingJob, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tiny_job.save(tmp_path / "job.toml")
    assert main(["estimate", "--config", str(path), "--json", "--batch-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch_size"] == 2 and report["total_steps"] > 0 and report["fits"] is True
    assert report["peak_memory"] == sum(report["memory"].values())


def test_save_config_writes_the_job(tiny_job: TrainingJob, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "saved.toml"
    assert main(_args(tiny_job) + ["--save-config", str(target)]) == 0
    assert TrainingJob.load(target).training.batch_size == tiny_job.training.batch_size


def test_a_job_that_does_not_fit_exits_1_with_the_advice(tiny_job: TrainingJob, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    memory = MemoryBreakdown(weights=10 * 2**30, lora_parameters=1, gradients=1, optimizer_state=2, activations=90 * 2**30,
                             loss_logits=3, overhead=4)
    canned = TrainingEstimate(
        total_steps=10, steps_per_epoch=5, trainable_parameters=1000, total_parameters=100_000, memory=memory,
        disk_bytes=5000, duration_seconds=7200, seconds_per_step=720, duration_method="probe", device="cpu",
        dtype="float32", available_memory=16 * 2**30, fits=False, recommended_device="cpu", recommended_batch_size=2,
        batch_size=64, sequence_length=512, tokens_per_step=32768, measured_peak_memory=2**30,
        warnings=("The run needs about 100 GB but cpu has 16 GB free: lower batch_size to 2",),
    )
    monkeypatch.setattr(estimate_module, "estimate", lambda job, probe=False: canned)
    assert main(_args(tiny_job) + ["--probe"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "of 16.00 GB free" in out
    assert "measured by the probe: 1.00 GB" in out and "Duration: about 120 min" in out
    assert "warning: The run needs about 100 GB but cpu has 16 GB free: lower batch_size to 2" in out


def test_a_missing_model_is_a_readable_error(tiny_job: TrainingJob, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = _args(tiny_job)
    args[args.index("--model") + 1] = str(tmp_path / "missing-model")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing-model" in err
