"""Runs that must not end Completed, and work that must not be lost (issue 13), on the tiny Llama."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from senior_intern.config import TrainingJob
from senior_intern.training import checkpoint as ckpt
from senior_intern.training import saving
from senior_intern.training.engine import Trainer
from senior_intern.training.events import TrainingStatus
from senior_intern.training.runlock import RunFinishedError, RunLock

ROOT = Path(__file__).resolve().parents[2]


def _library_ids(job: TrainingJob) -> list[str]:
    lib = Path(job.adapters_dir)
    return sorted(p.name for p in lib.iterdir() if not p.name.startswith(".")) if lib.exists() else []


def test_exploding_learning_rate_fails_and_saves_no_adapter(tiny_job: TrainingJob) -> None:
    tiny_job.training.learning_rate, tiny_job.training.max_steps = 1e6, 6
    tiny_job.training.warmup_steps, tiny_job.training.max_grad_norm = 0, 0.0
    result = Trainer().run(tiny_job)
    assert result.status is TrainingStatus.FAILED, result.error_message
    assert "no adapter was saved" in result.error_message
    assert result.adapter_path is None and _library_ids(tiny_job) == []


def test_failed_adapter_save_keeps_a_final_checkpoint_and_resume_retries(tiny_job: TrainingJob, monkeypatch) -> None:
    tiny_job.training.max_steps, tiny_job.training.save_every, tiny_job.training.eval_every = 3, 2, 0
    real_save = saving.save_adapter

    def full_disk(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving, "save_adapter", full_disk)
    failed = Trainer().run(tiny_job)
    assert failed.status is TrainingStatus.FAILED
    assert "senior-intern resume" in failed.error_message and "No space left" in failed.error_message
    run_dir = Path(failed.run_dir)
    assert ckpt.CheckpointManager(run_dir / "checkpoints").latest().name == "step-0000003"
    monkeypatch.setattr(saving, "save_adapter", real_save)
    retried = Trainer().resume(run_dir)
    assert retried.status is TrainingStatus.COMPLETED and retried.total_steps == 3
    assert len(_library_ids(tiny_job)) == 1
    with pytest.raises(RunFinishedError, match="already finished"):  # no duplicate adapter
        Trainer().resume(run_dir)
    assert len(_library_ids(tiny_job)) == 1


def test_resume_of_a_run_in_use_is_refused(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 4
    control_job = Trainer()
    from senior_intern.training.control import TrainingControl

    control = TrainingControl()
    stopped = control_job.run(tiny_job, control, lambda e: control.cancel() if type(e).__name__ == "Progress" else None)
    assert stopped.status is TrainingStatus.CANCELLED
    held = RunLock.acquire(stopped.run_dir)  # as another process running this run would
    try:
        result = Trainer().resume(stopped.run_dir)
        assert result.status is TrainingStatus.FAILED and "in use by pid" in result.error_message
    finally:
        held.release()
    assert Trainer().resume(stopped.run_dir).status is TrainingStatus.COMPLETED


_SIGTERM_SCRIPT = """
import os, signal, sys
from senior_intern.training import engine
from senior_intern.training.events import Progress

real_run = engine.Trainer.run

def run(self, job, control=None, on_event=None):
    def cb(e):
        on_event(e)
        if isinstance(e, Progress) and e.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    return real_run(self, job, control, cb)

engine.Trainer.run = run
from senior_intern.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tiny_job: TrainingJob, tmp_path: Path) -> None:
    tiny_job.training.save_every, tiny_job.training.eval_every = 0, 0  # only the SIGTERM save
    job_file = tiny_job.save(tmp_path / "job.toml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_SCRIPT, "train", "--config", str(job_file)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "SIGTERM: saving a checkpoint" in proc.stderr
    assert "Resume with: senior-intern resume" in proc.stdout
    run_dir = Path(tiny_job.output_dir) / tiny_job.name
    latest = ckpt.CheckpointManager(run_dir / "checkpoints").latest()
    assert latest is not None and ckpt.load(latest).global_step == 2



def test_train_warns_when_max_seq_length_exceeds_the_models_context(tiny_job: TrainingJob) -> None:
    from senior_intern.training.events import LogLevel, LogMessage

    tiny_job.training.max_seq_length, tiny_job.training.max_steps = 300, 1  # the tiny Llama was built for 256
    events: list = []
    result = Trainer().run(tiny_job, on_event=events.append)
    assert result.status is TrainingStatus.COMPLETED
    warnings = [e.text for e in events if isinstance(e, LogMessage) and e.level == LogLevel.WARNING]
    assert any("max_seq_length (300) is longer than the model's context length (256)" in w for w in warnings), warnings
