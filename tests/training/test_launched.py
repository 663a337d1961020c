"""``LaunchedRun``: a 2-process gloo run in child processes, as the app drives it (no Qt here)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from senior_intern.config import TrainingJob
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import LogMessage, Progress, TrainingStatus
from senior_intern.training.launched import LaunchedRun
from tests.conftest import write_dataset


@pytest.fixture
def two_process_job(tmp_path, tiny_model_dir) -> TrainingJob:
    job = TrainingJob(name="l", base_model_path=str(tiny_model_dir), dataset_path=str(write_dataset(tmp_path / "d.jsonl", n=40)),
                      output_dir=str(tmp_path / "runs"), adapters_dir=str(tmp_path / "adapters"), validation_split=0.25)
    t = job.training
    t.epochs, t.max_steps, t.batch_size, t.max_seq_length, t.device, t.dtype = 12, 200, 1, 64, "cpu", "float32"
    t.warmup_steps, t.save_every, t.eval_every, t.early_stopping_patience, t.processes = 2, 2, 0, 0, 2
    job.lora.rank, job.lora.alpha = 4, 8.0
    return job


def _rank_pids(events: list) -> dict[int, int]:
    for e in events:
        if isinstance(e, LogMessage) and e.text.startswith("Data parallel over 2 processes"):
            parts = e.text.split(": ", 1)[1].split(", ")
            return {int(p.split()[1]): int(p.split()[3]) for p in parts}
    return {}


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _bounded(run: LaunchedRun, timeout: float = 300):
    """``run.run()`` in a thread, so a hang fails the test instead of blocking it."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if run.pid:
            os.killpg(run.pid, signal.SIGKILL)
        raise AssertionError(f"LaunchedRun.run() did not return within {timeout} s")
    return box["result"]


def test_a_dead_rank_fails_the_run_with_the_launchers_report(two_process_job):
    events: list = []
    killed: dict[str, int] = {}

    def on_event(event):
        events.append(event)
        if not killed and isinstance(event, LogMessage) and "Checkpoint step-0000002 saved" in event.text:
            killed["pid"] = _rank_pids(events)[1]
            os.kill(killed["pid"], signal.SIGKILL)

    run = LaunchedRun.train(two_process_job, TrainingControl(), on_event)
    result = _bounded(run)
    assert killed, [getattr(e, "text", type(e).__name__) for e in events][-20:]
    assert result.status == TrainingStatus.FAILED
    assert f"rank 1 (local rank 1, pid {killed['pid']}) killed by SIGKILL" in result.error_message
    assert result.resume_checkpoint == str(two_process_job.run_dir)  # the launcher's "Resume with:" line
    assert _gone(killed["pid"]) and _gone(_rank_pids(events)[0]) and _gone(run.pid)


def test_ranks_that_do_not_stop_after_a_cancel_are_stopped(two_process_job):
    control, events = TrainingControl(), []

    def on_event(event):
        events.append(event)
        if isinstance(event, Progress) and event.global_step == 2:
            control.pause()  # held at a micro-batch: the cancel below reaches the ranks...
            control.cancel()

    run = LaunchedRun.train(two_process_job, control, on_event)
    run.CANCEL_GRACE = 0.0  # ...but the launcher is stopped before they act on it
    started = time.monotonic()
    result = _bounded(run, timeout=300)
    assert time.monotonic() - started < 300
    assert result.status in (TrainingStatus.FAILED, TrainingStatus.CANCELLED), result
    pids = _rank_pids(events)
    assert len(pids) == 2 and all(_gone(p) for p in pids.values()) and _gone(run.pid)
    assert any(isinstance(e, LogMessage) and "did not stop within 0 s of the cancel" in e.text for e in events)
