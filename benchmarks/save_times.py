"""Checkpoint and adapter save times for the demo model (the engine's own code paths).

    .venv/bin/python benchmarks/save_times.py [--repeats 5] [--history 1000]

A training ``Session`` is prepared on the demo model (float32, LoRA rank 16 on the seven
projections: 4.9M trainable parameters) with a few standard-library code windows; its AdamW
state is filled as after real steps and its metrics history holds ``--history`` steps, as a
checkpoint late in a run would. Then ``Session.save_checkpoint`` (what the loop calls every
``save_every`` steps) and ``save_adapter`` (what the end of a run calls) are timed, each
``--repeats`` times into fresh names. Spec: under 10 s and 5 s; our aim: under 1 s and 0.5 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common


def measure(repeats: int, history: int) -> dict:
    """Median seconds of a checkpoint save and of an adapter save, and their sizes."""
    import torch

    from senior_intern.adapters.store import save_adapter
    from senior_intern.config import LoraConfig, TrainingConfig, TrainingJob
    from senior_intern.training import checkpoint as ckpt
    from senior_intern.training.events import TrainingMetrics
    from senior_intern.training.session import Session

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(common.demo_folder())
        data = common.write_jsonl(root / "code.jsonl", ({"text": t} for t in common.code_windows(tokenizer, 8, 512)))
        job = TrainingJob(name="save-times", base_model_path=str(common.demo_model_path()), dataset_path=str(data),
                          output_dir=str(root / "runs"), adapters_dir=str(root / "adapters"), validation_split=0.0,
                          lora=LoraConfig(), training=TrainingConfig(device="cpu", dtype="float32", max_checkpoints=repeats + 1))
        session = Session(job, lambda _e: None)
        session.prepare()
        for p in session.params:  # AdamW state as after real steps (exp_avg, exp_avg_sq per tensor)
            p.grad = torch.zeros_like(p)
        session.optimizer.step()
        session.optimizer.zero_grad(set_to_none=True)
        for step in range(1, history + 1):
            session.tracker.record(TrainingMetrics(step=step, epoch=1, loss=2.0 - step * 1e-4, learning_rate=2e-4,
                                                   grad_norm=0.5, token_accuracy=0.6))
        session.pos.global_step = history
        checkpoint_s, adapter_s, sizes = [], [], {}
        for i in range(repeats):
            t = time.perf_counter()
            path = session.save_checkpoint(ckpt.step_name(history + i))
            checkpoint_s.append(time.perf_counter() - t)
            sizes["checkpoint_mb"] = sum(f.stat().st_size for f in path.iterdir()) / 1e6
            t = time.perf_counter()
            record = save_adapter(session.default_adapters_dir(), lora=session.lora, job=job, model_info=session.model_info,
                                  history=session.tracker.history, run_dir=session.run_dir)
            adapter_s.append(time.perf_counter() - t)
            sizes["adapter_mb"] = sum(f.stat().st_size for f in record.path.iterdir()) / 1e6
    return {"checkpoint_s": common.median(checkpoint_s), "adapter_s": common.median(adapter_s),
            "checkpoint_all_s": checkpoint_s, "adapter_all_s": adapter_s, **sizes, "load": common.load_average()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--history", type=int, default=1000, help="metrics records in the checkpoint (steps so far)")
    parser.add_argument("--child", action="store_true", help="print the result as one tagged JSON line")
    args = parser.parse_args()
    result = measure(args.repeats, args.history)
    return common.finish(result, args.child,
                         f"checkpoint save {result['checkpoint_s']:.3f} s ({result['checkpoint_mb']:.1f} MB; target < 1 s), "
                         f"adapter save {result['adapter_s']:.3f} s ({result['adapter_mb']:.1f} MB; target < 0.5 s); load {result['load']}")


if __name__ == "__main__":
    raise SystemExit(main())
