"""The relay between an app and a data-parallel run: event records, the control file, the CLI's use of both."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from senior_intern.config import LoraConfig, TrainingConfig
from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics
from senior_intern.training import relay
from senior_intern.training.events import (
    LogLevel, LogMessage, Progress, StateChanged, TrainingMetrics, TrainingState, TrainingStatus, WorldInfo)
from senior_intern.training.result import CheckpointInfo, TrainingResult
from tests.conftest import write_dataset


def _progress(step: int, loss: float = 1.5) -> Progress:
    hw = HardwareMetrics(cpu_utilization=50.0, ram_used=1, ram_total=2,
                         gpus=(GpuMetrics(index=0, name="gpu", utilization=10.0, memory_used=3, memory_total=4),))
    m = TrainingMetrics(step=step, epoch=1, loss=loss, learning_rate=1e-4, validation_loss=None, timestamp=5.0)
    return Progress(1, 2, step, 10, step, 20, 4 * step, 80, 100, 50, 1.25, None, m, hw)


def test_events_and_results_survive_the_round_trip():
    events = [_progress(3), StateChanged(TrainingState.TRAINING, TrainingState.PAUSED, "Paused"),
              LogMessage(LogLevel.WARNING, "careful"), WorldInfo(2, "gloo", ("cpu", "cpu"))]
    for event in events:
        assert relay.parse_record(relay.record(event)) == event
    result = TrainingResult(job_id="j", status=TrainingStatus.CANCELLED, final_metrics=TrainingMetrics(4, 1, math.nan, 0.1),
                            checkpoints=[CheckpointInfo("/c", 4, 1, 0.5, None, 1.0, 10, False)],
                            metrics_history=[TrainingMetrics(1, 1, 2.0, 0.1)], training_config=TrainingConfig(processes=2),
                            lora_config=LoraConfig(rank=4), resume_checkpoint="/run/checkpoints/step-0000004")
    back = relay.parse_record(relay.record(result))
    assert back.status is TrainingStatus.CANCELLED and math.isnan(back.final_metrics.loss)
    assert back.checkpoints == result.checkpoints and back.metrics_history == result.metrics_history
    assert back.training_config == result.training_config and back.lora_config == result.lora_config
    assert back.training_config.optimizer is result.training_config.optimizer
    assert isinstance(_progress(1).hardware.gpus, tuple) and relay.parse_record(relay.record(_progress(1))).hardware.gpus[0].name == "gpu"


def test_a_line_that_is_no_record_is_named():
    with pytest.raises(ValueError, match="not an event record: 'garbage'"):
        relay.parse_record("garbage")
    with pytest.raises(ValueError, match="Unknown"):
        relay.parse_record('{"type": "Unknown", "data": {}}')


def test_the_reader_returns_complete_lines_only_and_never_blocks(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = relay.EventReader(path)
    assert reader.read() == []  # no file yet
    line = relay.record(_progress(1))
    with path.open("a") as fh:
        fh.write(line[:40])
        fh.flush()
        assert reader.read() == []  # half a line waits
        fh.write(line[40:] + "\n" + relay.record(_progress(2)) + "\n")
    assert [e.global_step for e in reader.read()] == [1, 2]
    assert reader.read() == []
    writer = relay.EventWriter(path)
    writer(_progress(3))
    writer.close()
    assert [e.global_step for e in reader.read()] == [3]
    reader.close()


def test_file_control_follows_the_file_and_local_requests(tmp_path):
    path = tmp_path / "control.json"
    control = relay.FileControl(path)
    assert not control.paused and not control.cancelled  # no file yet
    relay.write_control(path, paused=True, cancelled=False)
    assert control.paused and not control.cancelled
    started = time.monotonic()
    assert control.wait_while_paused(timeout=0.5) is False
    assert 0.4 <= time.monotonic() - started < 5
    threading.Timer(0.3, lambda: relay.write_control(path, paused=False, cancelled=False)).start()
    started = time.monotonic()
    control.wait_while_paused(timeout=10)
    assert not control.paused and time.monotonic() - started < 5  # the resume was seen at the next poll
    relay.write_control(path, paused=False, cancelled=True)
    assert control.cancelled
    relay.write_control(path, paused=False, cancelled=False)
    assert control.cancelled  # a cancel is final
    local = relay.FileControl(tmp_path / "other.json")
    local.cancel()  # Ctrl-C / SIGTERM in the rank itself
    assert local.cancelled
    path.write_text("{half")
    assert relay.read_control(path) is None and control.cancelled  # an unreadable file changes nothing


def test_the_relay_and_the_launched_run_import_without_torch():
    code = "import sys, senior_intern.training.relay, senior_intern.training.launched; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- the CLI under the relay's environment variables, 2 processes over gloo ---------------------
def _env(events: Path, control: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", SENIOR_INTERN_EVENTS=str(events), SENIOR_INTERN_CONTROL=str(control))
    return env


def _wait_for(reader: relay.EventReader, seen: list, proc: subprocess.Popen, what, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(reader.read())
        found = [e for e in seen if what(e)]
        if found:
            return found[-1]
        if proc.poll() is not None:
            seen.extend(reader.read())
            found = [e for e in seen if what(e)]
            assert found, f"the run ended (rc {proc.returncode}) first: {proc.stderr.read()[-3000:] if proc.stderr else ''}"
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"timed out; events so far: {[type(e).__name__ for e in seen][-20:]}")


def test_two_ranks_relay_events_and_obey_pause_and_cancel_from_the_file(tmp_path, tiny_model_dir):
    events, control = tmp_path / "events.jsonl", tmp_path / "control.json"
    data = write_dataset(tmp_path / "data.jsonl", n=40)
    args = ["train", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(tmp_path / "runs"),
            "--adapters-dir", str(tmp_path / "adapters"), "--name", "r", "--batch-size", "1", "--max-seq-length", "64",
            "--device", "cpu", "--dtype", "float32", "--validation-split", "0.25", "--epochs", "12", "--max-steps", "200",
            "--save-every", "50", "--eval-every", "0", "--rank", "4", "--warmup-steps", "2", "--nproc-per-node", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "senior_intern.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(events, control), start_new_session=True)
    reader, seen = relay.EventReader(events), []
    try:
        world = _wait_for(reader, seen, proc, lambda e: isinstance(e, WorldInfo))
        assert world.world_size == 2 and world.backend == "gloo" and world.devices == ("cpu", "cpu")
        _wait_for(reader, seen, proc, lambda e: isinstance(e, Progress) and e.global_step >= 2)
        relay.write_control(control, paused=True, cancelled=False)
        _wait_for(reader, seen, proc, lambda e: isinstance(e, StateChanged) and e.new == TrainingState.PAUSED)
        time.sleep(1.0)
        seen.extend(reader.read())
        at_pause = max(e.global_step for e in seen if isinstance(e, Progress))
        time.sleep(1.5)
        seen.extend(reader.read())
        assert max(e.global_step for e in seen if isinstance(e, Progress)) == at_pause  # both ranks hold
        relay.write_control(control, paused=False, cancelled=False)
        _wait_for(reader, seen, proc, lambda e: isinstance(e, Progress) and e.global_step > at_pause)
        relay.write_control(control, paused=False, cancelled=True)
        result = _wait_for(reader, seen, proc, lambda e: isinstance(e, TrainingResult))
        assert proc.wait(timeout=120) == 0  # a clean cancel is no failure for the launcher
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
        reader.close()
    assert result.status == TrainingStatus.CANCELLED and result.total_steps < 200
    assert result.resume_checkpoint and (Path(result.resume_checkpoint) / "state.json").is_file()
    steps = [e.global_step for e in seen if isinstance(e, Progress)]
    assert steps == list(range(1, len(steps) + 1))  # rank 0 alone relays: each step once
