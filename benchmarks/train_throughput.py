"""Training throughput and memory: our engine against a plain transformers + PEFT loop.

    .venv/bin/python benchmarks/train_throughput.py [--steps 3] [--warmup 1] [--rounds 1]

Both trainers run the embedded demo model (SmolLM2-135M, 30 layers) in float32 with LoRA rank
16, alpha 32, dropout 0.05 on the seven projections, batch 4, sequence 512, AdamW at 2e-4
(constant), gradient clipping at 1.0, starting from the same LoRA weights.

1. Code: windows of exactly 512 tokens of the Python standard library's own sources. Every
   trainer runs in a fresh process (so its peak resident memory is its own); the processes
   alternate, ours then the reference, ``--rounds`` times. Reported: median tokens/s over the
   timed steps (after ``--warmup`` steps), peak RSS, the loss of every step (the first-step
   losses must agree within 1e-3: same weights, same batch), the ratios, and our model FLOP
   utilisation: FLOPs per token (``common.lora_step_flops_per_token``) times tokens/s over the
   float32 matmul peak measured in this run.
2. Packing: instruction records built from standard-library functions (real, uneven lengths),
   one epoch each: our engine packs them into full rows, the reference pads every batch to its
   longest record (dynamic padding). Reported: trained (label) tokens per second.
3. The other benchmark scripts: LoRA inference overhead (``lora_overhead.py``), checkpoint and
   adapter save times (``save_times.py``) and, when present, time to the GUI window
   (``gui_startup.py``).

Numbers depend on the machine and on what else runs: the load average is printed with them.
``--json PATH`` writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve()
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BATCH, SEQ, RANK, ALPHA, DROPOUT, LR = 4, 512, 16, 32.0, 0.05, 2e-4


# --- the two trainers (each runs in a child process) -------------------------------------------------

def _job(data: Path, out: Path, packing: bool, max_steps: int | None):
    from senior_intern.config import LoraConfig, TrainingConfig, TrainingJob

    training = TrainingConfig(
        epochs=1, batch_size=BATCH, learning_rate=LR, warmup_steps=0, lr_scheduler="constant",
        max_seq_length=SEQ, max_steps=max_steps, eval_every=0, save_every=0, max_grad_norm=1.0,
        packing=packing, device="cpu", dtype="float32", seed=0, weight_decay=0.01,
    )
    lora = LoraConfig(rank=RANK, alpha=ALPHA, dropout=DROPOUT, target_modules=list(TARGETS))
    return TrainingJob(name="throughput", base_model_path=str(common.demo_model_path()), dataset_path=str(data),
                       output_dir=str(out), adapters_dir=str(out / "adapters"), validation_split=0.0,
                       lora=lora, training=training)


def _initial_weights(lora_state: dict, path: Path) -> dict:
    """The shared starting LoRA weights: written by the first trainer, read by all others."""
    from safetensors.torch import load_file, save_file

    if path.exists():
        return load_file(str(path))
    save_file({k: v.contiguous() for k, v in lora_state.items()}, str(path))
    return lora_state


class _Ours:
    """Our engine: a real ``Session``; each step is its loop body (``_optimizer_step``)."""

    def __init__(self, args) -> None:
        from senior_intern.training.session import Session

        self._tmp = tempfile.TemporaryDirectory()
        job = _job(Path(args.data), Path(self._tmp.name), args.packing, None)
        self.session = Session(job, lambda _e: None)
        self.session.prepare()
        self.session.lora.load_lora_state_dict(_initial_weights(self.session.lora.lora_state_dict(), Path(args.init)))
        self.session.lora.train()
        self.batches = iter(self.session.train_loader)
        self.steps = len(self.session.train_loader)

    def step(self) -> dict:
        """One optimizer step (batch collation included); its loss and token counts."""
        batch = next(self.batches)
        self.session._optimizer_step([batch])
        return {"loss": self.session.tracker.history[-1].loss, "tokens": batch.n_tokens, "trained": batch.n_trained_tokens}


class _Reference:
    """transformers + PEFT: the loop a user would write (AdamW, clip 1.0) over the same batches."""

    def __init__(self, args) -> None:
        import torch
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model, set_peft_model_state_dict

        from senior_intern.data import BatchLoader, load_training_data
        from senior_intern.models import load_base_model

        with tempfile.TemporaryDirectory() as tmp:
            job = _job(Path(args.data), Path(tmp), args.packing, None)
            loaded = load_base_model(job.base_model_path, device="cpu", dtype="float32")
            data = load_training_data(job, loaded.tokenizer)
        tok = loaded.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        loader = BatchLoader(data.train, BATCH, pad_id=pad_id, max_seq_length=SEQ, packing=args.packing, shuffle=True, seed=0)
        loader.set_epoch(0)
        self.model = get_peft_model(loaded.model, PeftLoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                                                 target_modules=TARGETS, task_type="CAUSAL_LM"))
        set_peft_model_state_dict(self.model, _initial_weights({}, Path(args.init)))
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=LR, weight_decay=0.01)
        self.batches = iter(loader)
        self.steps = len(loader)
        self.packing = args.packing

    def step(self) -> dict:
        """One optimizer step (batch collation included)."""
        import torch

        batch = next(self.batches)
        if self.packing and int(batch.segment_ids.max()) > 0:
            raise ValueError("the reference runs rows of one sample each; this data packs several into a row")
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": out.loss.item(), "tokens": batch.n_tokens, "trained": batch.n_trained_tokens}


def child(args) -> None:
    """Serve one trainer: READY after preparing, then one STEP line per ``step`` command, END at ``end``."""
    import sys

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = (_Ours if args.child == "ours" else _Reference)(args)
    common.emit_result({"ready": True, "steps": trainer.steps})
    for command in sys.stdin:
        if command.strip() not in ("step", "profile"):
            break
        if command.strip() == "profile":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                started = time.perf_counter()
                result = trainer.step()
                elapsed = time.perf_counter() - started
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
            result["profile"] = table
        else:
            started = time.perf_counter()
            result = trainer.step()
            elapsed = time.perf_counter() - started
        common.emit_result(result | {"time": elapsed})
    common.emit_result({"peak_rss_mb": common.peak_rss_mb(), "threads": torch.get_num_threads()})


# --- the parent: data, lock-step alternation, summary --------------------------------------------------

def _start(trainer: str, data: Path, init: Path, packing: bool, threads: int = 0) -> common.Child:
    args = ["--child", trainer, "--data", str(data), "--init", str(init)] + (["--packing"] if packing else [])
    return common.Child(HERE, args + (["--threads", str(threads)] if threads else []))


def _summary(steps: list[dict], end: dict, warmup: int, key: str) -> dict:
    """Median and overall rate (tokens or trained tokens per second) over the timed steps."""
    timed = steps[warmup:]
    return {
        "median_rate": common.median([s[key] / s["time"] for s in timed]),
        "total_rate": sum(s[key] for s in timed) / sum(s["time"] for s in timed) if timed else float("nan"),
        "median_step_s": common.median([s["time"] for s in timed]),
        "times": [s["time"] for s in steps],
        "losses": [s["loss"] for s in steps],
        **end,
    }


def scenario_code(args, tmp: Path, tokenizer) -> dict:
    """Full 512-token code windows; the two trainers (one process each) alternate step by step."""
    steps = args.warmup + args.steps
    data = common.write_jsonl(tmp / "code.jsonl", ({"text": t} for t in common.code_windows(tokenizer, BATCH * steps + BATCH, SEQ)))
    init = tmp / "initial_lora.safetensors"
    ours = _start("ours", data, init, True, args.threads)
    ours.wait_ready()  # writes the shared initial weights
    trainers = {"ours": ours, "reference": _start("reference", data, init, True, args.threads)}
    trainers["reference"].wait_ready()
    done: dict[str, list] = {name: [] for name in trainers}
    for i in range(steps):
        order = list(trainers) if i % 2 == 0 else list(reversed(trainers))
        for name in order:
            profile = args.profile is not None and i == steps - 1
            done[name].append(trainers[name].step(profile))
            if profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                (args.profile / f"{name}.txt").write_text(done[name][-1].pop("profile"), encoding="utf-8")
        print(f"  step {i + 1}: " + ", ".join(f"{n} {done[n][-1]['time']:.1f} s" for n in trainers), flush=True)
    return {name: _summary(done[name], trainers[name].end(), args.warmup, "tokens") for name in trainers}


def scenario_packing(args, tmp: Path) -> dict:
    """Variable-length instruction records, one epoch each: our packing against dynamic padding."""
    data = common.write_jsonl(tmp / "instructions.jsonl", common.instruction_records(args.packing_records))
    init = tmp / "initial_lora.safetensors"  # the same starting weights as the code scenario
    trainers = {"ours": _start("ours", data, init, True, args.threads),
                "reference": _start("reference", data, init, False, args.threads)}
    total = {name: t.wait_ready()["steps"] for name, t in trainers.items()}
    done: dict[str, list] = {name: [] for name in trainers}
    while any(len(done[n]) < total[n] for n in trainers):  # the one furthest behind in its epoch goes next
        name = min((n for n in trainers if len(done[n]) < total[n]), key=lambda n: len(done[n]) / total[n])
        done[name].append(trainers[name].step())
    out = {}
    for name, trainer in trainers.items():
        steps = done[name]
        out[name] = _summary(steps, trainer.end(), 1, "trained") | {
            "steps": len(steps), "tokens": sum(s["tokens"] for s in steps), "trained_tokens": sum(s["trained"] for s in steps)}
        print(f"  {name}: {out[name]['steps']} steps, {out[name]['tokens']} tokens of which {out[name]['trained_tokens']} trained, "
              f"{out[name]['total_rate']:.1f} trained tokens/s", flush=True)
    return out


def _other_benchmarks(args) -> dict:
    out = {}
    for name in ("lora_overhead", "save_times"):
        out[name] = common.run_child(HERE.with_name(f"{name}.py"), ["--child"])
        print(f"  {name}: {out[name]}", flush=True)
    gui = HERE.with_name("gui_startup.py")
    if gui.exists() and not args.skip_gui:
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, str(gui), "--runs", "3"], cwd=common.ROOT, capture_output=True, text=True, timeout=600)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("time-to-window")), None)
        out["gui_startup"] = line or f"gui_startup.py failed (exit {proc.returncode})"
        print(f"  gui: {out['gui_startup']}", flush=True)
    return out


def _report(res: dict) -> str:
    code, pack, other = res["code"], res.get("packing"), res.get("other", {})
    ours, ref = code["ours"], code["reference"]
    tps_ratio = ours["median_rate"] / ref["median_rate"]
    mem_ratio = ours["peak_rss_mb"] / ref["peak_rss_mb"]
    mfu = ours["median_rate"] * res["flops_per_token"] / (res["matmul_peak_gflops"] * 1e9)
    rows = [
        ["tokens/s (median step)", f"{ours['median_rate']:.1f}", f"{ref['median_rate']:.1f}", f"{tps_ratio:.2f}x", ">= 2.0x"],
        ["median step (s)", f"{ours['median_step_s']:.2f}", f"{ref['median_step_s']:.2f}", "", ""],
        ["peak RSS (MiB)", f"{ours['peak_rss_mb']:.0f}", f"{ref['peak_rss_mb']:.0f}", f"{mem_ratio:.2f}x", "<= 0.5x"],
        ["MFU (ours)", f"{100 * mfu:.1f}%", "", "", ""],
    ]
    if pack:
        r = pack["ours"]["total_rate"] / pack["reference"]["total_rate"]
        rows.append(["packing: trained tokens/s", f"{pack['ours']['total_rate']:.1f}", f"{pack['reference']['total_rate']:.1f}", f"{r:.2f}x", ">= 2.5x"])
    lines = [common.table(rows, ["", "ours", "transformers+PEFT", "ratio", "target"])]
    first = abs(ours["losses"][0] - ref["losses"][0])
    lines.append(f"losses ours:      {[round(x, 4) for x in ours['losses']]}")
    lines.append(f"losses reference: {[round(x, 4) for x in ref['losses']]}")
    lines.append(f"first-step loss difference {first:.2e} ({'within' if first <= 1e-3 else 'NOT within'} 1e-3)")
    if "lora_overhead" in other:
        o = other["lora_overhead"]
        lines.append(f"LoRA inference forward overhead: {100 * o['overhead']:.1f}% (base {o['base_ms']:.0f} ms, LoRA {o['lora_ms']:.0f} ms; target < 10%)")
    if "save_times" in other:
        s = other["save_times"]
        lines.append(f"checkpoint save {s['checkpoint_s']:.3f} s (target < 1 s), adapter save {s['adapter_s']:.3f} s (target < 0.5 s)")
    if "gui_startup" in other:
        lines.append(str(other["gui_startup"]))
    lines.append(f"float32 matmul peak {res['matmul_peak_gflops']:.1f} GFLOP/s, {res['flops_per_token'] / 1e6:.0f} MFLOP per token, "
                 f"torch threads {ours['threads']}, load average before {res['load_before']}, after {res['load_after']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per trainer and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (ours, then reference)")
    parser.add_argument("--packing-records", type=int, default=64, help="instruction records in the packing scenario (0: skip it)")
    parser.add_argument("--skip-other", action="store_true", help="skip LoRA overhead, save times and GUI start-up")
    parser.add_argument("--skip-gui", action="store_true", help="skip the GUI start-up benchmark")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in both trainers (0: torch's default)")
    parser.add_argument("--profile", type=Path, help="profile the last code step of each trainer into this folder")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    parser.add_argument("--packing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    from transformers import AutoConfig, AutoTokenizer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    folder = common.demo_folder()
    tokenizer, config = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
    res: dict = {"load_before": common.load_average(), "matmul_peak_gflops": common.matmul_peak_gflops(),
                 "flops_per_token": common.lora_step_flops_per_token(config, SEQ, RANK, TARGETS)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"code windows, batch {BATCH} x {SEQ} (load {res['load_before']})", flush=True)
        res["code"] = scenario_code(args, Path(tmp), tokenizer)
        if args.packing_records:
            print("instruction records: packing against dynamic padding", flush=True)
            res["packing"] = scenario_packing(args, Path(tmp))
    if not args.skip_other:
        res["other"] = _other_benchmarks(args)
    res["load_after"] = common.load_average()
    res["wall_s"] = time.perf_counter() - started
    print()
    print(_report(res))
    print(f"benchmark wall time {res['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
