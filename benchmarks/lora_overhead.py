"""LoRA inference overhead: forward time of the LoRA-wrapped demo model against the bare base model.

    .venv/bin/python benchmarks/lora_overhead.py [--batch 4] [--seq 512] [--repeats 5]

Two copies of the demo model (float32, CPU, eval mode, no gradients): the bare base model and
the same weights wrapped with LoRA (rank 16 on the seven projections, adapters not merged, B
filled with random values so the update is real work). Full forward passes (logits) on the
same standard-library tokens alternate between the two; the overhead is the ratio of the
median times minus one. Spec: under 10%. A merged adapter costs nothing at all (it is the
base model), so only the unmerged case is measured.
"""

from __future__ import annotations

import argparse
import copy
import time

import common


def measure(batch: int, seq: int, repeats: int) -> dict:
    """Median forward seconds of the base and the LoRA model and the relative overhead."""
    import torch

    from senior_intern.config import LoraConfig
    from senior_intern.lora import LoraModel
    from senior_intern.models import load_base_model

    loaded = load_base_model(common.demo_model_path(), device="cpu", dtype="float32")
    base = loaded.model
    wrapped = copy.deepcopy(base)
    lora = LoraModel(wrapped, LoraConfig(rank=16, alpha=32.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.normal_(0.0, 0.02, generator=generator)
    lora.eval()
    text = "".join(common.code_windows(loaded.tokenizer, batch, seq))
    ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, : batch * seq]
    ids = ids.view(batch, seq)
    times: dict[str, list[float]] = {"base": [], "lora": []}
    models = {"base": base, "lora": wrapped}
    with torch.no_grad():
        for name, model in models.items():
            model(input_ids=ids, use_cache=False)  # warm-up
        for _ in range(repeats):
            for name, model in models.items():
                t = time.perf_counter()
                model(input_ids=ids, use_cache=False)
                times[name].append(time.perf_counter() - t)
    base_s, lora_s = common.median(times["base"]), common.median(times["lora"])
    return {"base_ms": 1e3 * base_s, "lora_ms": 1e3 * lora_s, "overhead": lora_s / base_s - 1.0,
            "batch": batch, "seq": seq, "threads": torch.get_num_threads(), "load": common.load_average()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per model")
    parser.add_argument("--child", action="store_true", help="print the result as one tagged JSON line")
    args = parser.parse_args()
    result = measure(args.batch, args.seq, args.repeats)
    return common.finish(result, args.child,
                         f"base {result['base_ms']:.0f} ms, LoRA {result['lora_ms']:.0f} ms: overhead {100 * result['overhead']:.1f}% "
                         f"(target < 10%; batch {args.batch} x {args.seq}, {result['threads']} threads, load {result['load']})")


if __name__ == "__main__":
    raise SystemExit(main())
