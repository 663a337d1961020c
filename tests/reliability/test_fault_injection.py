"""Fault injection (issue 13): a real CLI run killed with SIGKILL at seeded random points, resumed
each time, ends with an adapter bitwise equal to an uninterrupted run's, and only one of it.

Where a kill lands is chosen by a seeded generator: after a random number of optimizer steps
(read from metrics.jsonl as the run writes it) plus a random delay, so kills fall mid-step,
mid-evaluation, mid-checkpoint or during the final save. Every process runs one thread, so the
float sums, and with them the weights, do not depend on how busy the machine is.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from senior_intern.config import TrainingJob

ROOT = Path(__file__).resolve().parents[2]
SEED = 1301
TOTAL_STEPS = 8
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "senior_intern.cli", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _steps_written(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    try:
        return sum(1 for line in metrics.read_text(encoding="utf-8").splitlines() if '"loss"' in line)
    except OSError:
        return 0


def _adapters(library: Path) -> list[Path]:
    return sorted(p for p in library.iterdir() if p.is_dir() and not p.name.startswith(".")) if library.exists() else []


def _weights(adapter: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter / "adapter_model.safetensors"))


def _job(base: TrainingJob, root: Path) -> Path:
    job = TrainingJob.from_dict(base.to_dict())
    job.output_dir, job.adapters_dir = str(root / "runs"), str(root / "adapters")
    job.lora.dropout = 0.1  # dropout draws random numbers: the RNG state must survive each kill
    t = job.training
    t.max_steps, t.save_every, t.eval_every, t.gradient_accumulation_steps = TOTAL_STEPS, 2, 3, 2
    return job.save(root / "job.toml")


@pytest.mark.timeout(900)
def test_seeded_kills_of_the_cli_resume_to_the_uninterrupted_adapter(tiny_job: TrainingJob, tmp_path: Path) -> None:
    ref_job = _job(tiny_job, tmp_path / "ref")
    ref = _cli("train", "--config", str(ref_job))
    out = ref.communicate(timeout=600)[0].decode()
    assert ref.returncode == 0, out[-3000:]
    [reference] = _adapters(tmp_path / "ref" / "adapters")

    job_file = _job(tiny_job, tmp_path / "killed")
    run_dir = tmp_path / "killed" / "runs" / tiny_job.name
    library = tmp_path / "killed" / "adapters"
    rng = random.Random(SEED)
    kills, args = 0, ["train", "--config", str(job_file)]
    for attempt in range(8):
        proc = _cli(*args)
        if attempt < 3:  # three kills, then a run to the end
            target = min(_steps_written(run_dir) + rng.randint(1, 3), TOTAL_STEPS)
            deadline = time.monotonic() + 300
            while proc.poll() is None and _steps_written(run_dir) < target and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        out = proc.communicate(timeout=600)[0].decode()
        if proc.returncode == 0 or (proc.returncode == 2 and "already finished" in out):
            break  # done; or the last kill landed after the run was marked finished, and resume says so
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
        args = ["resume", str(run_dir)] if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()) else args
        if args[0] == "train":  # killed before its first checkpoint: start afresh (the folder is in use no more)
            job_file = _job(tiny_job, tmp_path / f"killed-{attempt}")
            run_dir = tmp_path / f"killed-{attempt}" / "runs" / tiny_job.name
            library = tmp_path / f"killed-{attempt}" / "adapters"
            args = ["train", "--config", str(job_file)]
    else:
        pytest.fail("the run never completed")
    assert kills >= 1
    adapters = _adapters(library)
    assert len(adapters) == 1, [p.name for p in adapters]  # a kill during the final save adds no twin
    got, want = _weights(adapters[0]), _weights(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # the run is finished now: one more resume says so and adds nothing
    again = subprocess.run([sys.executable, "-m", "senior_intern.cli", "resume", str(run_dir)], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "finished" in (again.stdout + again.stderr)
    assert len(_adapters(library)) == 1
