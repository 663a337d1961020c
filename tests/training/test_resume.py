"""Exact resume: a stopped and resumed run ends bitwise equal to an uninterrupted one (CPU, same seed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from senior_intern.config import TrainingJob
from senior_intern.training import checkpoint as ckpt
from senior_intern.training.control import TrainingControl
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Progress, TrainingStatus

ROOT = Path(__file__).resolve().parents[2]


def _final_checkpoint(result) -> ckpt.Checkpoint:
    return ckpt.load(ckpt.CheckpointManager(Path(result.run_dir) / "checkpoints").latest())


def _history(result) -> list[tuple]:
    return [(m.step, m.epoch, m.loss, m.learning_rate, m.grad_norm, m.validation_loss) for m in result.metrics_history]


def assert_same_run(a, b) -> None:
    """Same LoRA weights, optimizer state and metrics, bitwise."""
    assert a.status is TrainingStatus.COMPLETED and b.status is TrainingStatus.COMPLETED
    wa = load_file(str(Path(a.adapter_path) / "adapter_model.safetensors"))
    wb = load_file(str(Path(b.adapter_path) / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ca, cb = _final_checkpoint(a), _final_checkpoint(b)
    assert ca.global_step == cb.global_step == a.total_steps == b.total_steps
    oa, ob = ca.trainer_state["optimizer"]["state"], cb.trainer_state["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        for name, value in oa[k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(ob[k][name])), (k, name)
    assert ca.trainer_state["scheduler"] == cb.trainer_state["scheduler"]
    assert _history(a) == _history(b)


@pytest.fixture
def resume_job(tiny_job: TrainingJob) -> TrainingJob:
    tiny_job.lora.dropout = 0.1  # dropout draws random numbers: RNG state must be restored too
    tiny_job.training.gradient_accumulation_steps = 2
    return tiny_job


def _copy_job(job: TrainingJob, output: Path) -> TrainingJob:
    copy = TrainingJob.from_dict(job.to_dict())
    copy.output_dir = str(output)
    return copy


def test_cancel_then_resume_equals_uninterrupted(resume_job: TrainingJob, tmp_path: Path) -> None:
    reference = Trainer().run(_copy_job(resume_job, tmp_path / "ref"))
    control = TrainingControl()

    def on_event(e):  # cancel lands in the middle of the next accumulation group
        if isinstance(e, Progress) and e.global_step == 3:
            control.cancel()

    stopped = Trainer().run(_copy_job(resume_job, tmp_path / "stopped"), control, on_event)
    assert stopped.status is TrainingStatus.CANCELLED and stopped.total_steps == 3
    resumed = Trainer().resume(stopped.resume_checkpoint)
    assert resumed.run_dir == stopped.run_dir
    assert_same_run(reference, resumed)


_KILL_SCRIPT = """
import os, signal, sys
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Progress

def on_event(e):
    if isinstance(e, Progress) and e.global_step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

Trainer().run(TrainingJob.load(sys.argv[1]), None, on_event)
"""


def test_sigkill_after_checkpoint_then_resume_equals_uninterrupted(resume_job: TrainingJob, tmp_path: Path) -> None:
    reference = Trainer().run(_copy_job(resume_job, tmp_path / "ref"))
    job = _copy_job(resume_job, tmp_path / "killed")
    job_file = job.save(tmp_path / "job.toml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(job_file), "5"], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    run_dir = Path(job.output_dir) / job.name
    assert ckpt.CheckpointManager(run_dir / "checkpoints").latest().name == "step-0000004"
    resumed = Trainer().resume(run_dir)
    assert_same_run(reference, resumed)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tiny_job: TrainingJob, monkeypatch) -> None:
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second regular checkpoint (step 4): half a file, then the disk is full
            Path(f).write_bytes(b"\x80\x02partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    tiny_job.training.eval_every = 0  # no 'best' checkpoint in the way
    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    result = Trainer().run(tiny_job)
    checkpoints = Path(result.run_dir) / "checkpoints"
    assert result.status is TrainingStatus.FAILED  # issue 13: the message names the folder and the space needed
    assert f"No space left on {checkpoints}: a checkpoint needs ~" in result.error_message
    assert not (checkpoints / "step-0000004").exists()
    assert result.resume_checkpoint == str(checkpoints / "step-0000002")
    assert ckpt.load(result.resume_checkpoint).global_step == 2
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    resumed = Trainer().resume(result.run_dir)
    assert resumed.status is TrainingStatus.COMPLETED


def test_damaged_checkpoints_are_reported_and_skipped(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 6
    result = Trainer().run(tiny_job)
    checkpoints = Path(result.run_dir) / "checkpoints"
    newest = checkpoints / "step-0000006"
    data = (newest / "lora.safetensors").read_bytes()
    (newest / "lora.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="lora.safetensors"):
        ckpt.load(newest)
    assert ckpt.CheckpointManager(checkpoints).latest().name == "step-0000004"
    (checkpoints / "step-0000004" / "state.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="state.json is not valid JSON"):
        ckpt.load(checkpoints / "step-0000004")
    (checkpoints / "step-0000002" / "job.toml").unlink()
    with pytest.raises(ckpt.CheckpointError, match="job.toml is missing"):
        ckpt.load(checkpoints / "step-0000002")
    assert ckpt.CheckpointManager(checkpoints).latest() is None
    with pytest.raises(ckpt.CheckpointError, match="No usable checkpoint"):
        Trainer().resume(result.run_dir)
    with pytest.raises(FileNotFoundError):
        Trainer().resume(checkpoints / "nope")
