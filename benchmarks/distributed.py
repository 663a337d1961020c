"""Data parallel on this machine: 2 processes x 1 thread against 1 process x 2 threads.

    .venv/bin/python benchmarks/distributed.py [--steps 4] [--seq 256]

Both runs train the embedded demo model (SmolLM2-135M) in float32, LoRA rank 8, on windows of
the standard library's sources, with the same global batch of 2 sequences per optimizer step:
batch 2 in one process with 2 threads, or batch 1 in each of 2 gloo processes with 1 thread
each (started through ``torch.distributed.run``, as ``--nproc-per-node 2`` does). Each worker
reports the trained tokens/s of its run and its own peak RSS; printed: tokens/s of each
setting, their ratio, and peak memory per process. The load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common

HERE = Path(__file__).resolve()


def worker(root: Path, batch: int, steps: int, seq: int, out: Path) -> None:
    """One process of one setting: train, write tokens/s and peak RSS as JSON for this rank."""
    from senior_intern.config import TrainingJob
    from senior_intern.training import distributed
    from senior_intern.training.engine import Trainer

    ctx = distributed.init_from_env("cpu")
    job = TrainingJob(name="bench", base_model_path=str(common.demo_folder()), dataset_path=str(root / "data.jsonl"),
                      output_dir=str(root / f"runs-{ctx.world_size}"), adapters_dir=str(root / f"adapters-{ctx.world_size}"),
                      validation_split=0.0)
    t = job.training
    t.epochs, t.max_steps, t.batch_size, t.max_seq_length = 1, steps, batch, seq
    t.device, t.dtype, t.save_every, t.eval_every, t.warmup_steps = "cpu", "float32", 0, 0, 0
    job.lora.rank, job.lora.alpha, job.lora.dropout = 8, 16.0, 0.0
    from senior_intern.training.events import Progress

    last: list[Progress] = []
    result = Trainer().run(job, on_event=lambda e: last.append(e) if isinstance(e, Progress) else None)
    distributed.shutdown()
    if not result.success or not last:
        raise SystemExit(f"rank {ctx.rank}: {result.error_message}")
    # Tokens of every rank (the engine sums them) over the training time, loading excluded.
    out.with_suffix(f".{ctx.rank}.json").write_text(json.dumps({
        "tokens_per_s": last[-1].tokens_processed / last[-1].elapsed, "peak_rss_mb": common.peak_rss_mb(), "threads": os.environ.get("OMP_NUM_THREADS"),
    }))


def _run(root: Path, nproc: int, steps: int, seq: int) -> list[dict]:
    out = root / f"result-{nproc}"
    env = dict(os.environ, OMP_NUM_THREADS=str(2 // nproc))
    args = [str(HERE), "--worker", str(root), "--batch", str(2 // nproc), "--steps", str(steps), "--seq", str(seq), "--out", str(out)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
           if nproc > 1 else [sys.executable, *args])
    subprocess.run(cmd, check=True, env=env)
    return [json.loads(out.with_suffix(f".{r}.json").read_text()) for r in range(nproc)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.batch, a.steps, a.seq, a.out)
        return 0
    from senior_intern.models import load_base_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer = load_base_model(common.demo_folder(), device="cpu", dtype="float32").tokenizer
        windows = common.code_windows(tokenizer, 2 * a.steps + 4, a.seq)
        common.write_jsonl(root / "data.jsonl", ({"text": w} for w in windows))
        one, two = _run(root, 1, a.steps, a.seq), _run(root, 2, a.steps, a.seq)
    ratio = two[0]["tokens_per_s"] / one[0]["tokens_per_s"]
    print(common.table([
        ["1 process x 2 threads", f"{one[0]['tokens_per_s']:.0f}", f"{one[0]['peak_rss_mb']:.0f}"],
        ["2 processes x 1 thread", f"{two[0]['tokens_per_s']:.0f}", " / ".join(f"{r['peak_rss_mb']:.0f}" for r in two)],
    ], ["setting", "tokens/s", "peak RSS per process (MiB)"]))
    print(f"ratio 2x1 / 1x2: {ratio:.2f}; load average {common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
