"""The GPU check (issue #16): one prepared script for a session lent a GPU machine.

    python benchmarks/gpu_check.py                   # on the GPU: about 5 minutes on an H200
    python benchmarks/gpu_check.py --device cpu      # smoke check on a CPU: tiny shapes, a minute

Writes ``gpu_check.json`` (every figure and every pass/fail) and ``gpu_check.log`` into
``--out`` (default: ``$OUT`` when set, else ``benchmarks/out``). Each section runs on its own,
so one failure is recorded and the others still run; the exit status is 1 when any check failed.

The machine starts bare: torch with CUDA, transformers and peft, nothing else of ours, no
package registry. The script builds its random-weight models in memory (a 1B-class Llama and an
8B-shaped Llama cut to 4 layers) and a byte-level BPE tokenizer trained in-process, so it needs
no model file. Wheels to carry (pure Python; ``pip download --no-deps`` them here and install
with ``pip install --no-index --no-deps``): psutil, platformdirs, tomli-w, gguf, nvidia-ml-py
(``check_imports`` names what is missing before anything runs).

Sections:
1. parity on the device, bf16 and fp32 (fp16 on CUDA): the fused LoRA linear function against
   a float64 reference, the fused MLP against the module's own forward, the chunked loss against
   full logits, packed attention (the path the device takes: varlen on CUDA half precision)
   against the 4D block-diagonal mask; with the attention calls per layer;
2. end-to-end ``Trainer`` runs in bf16, fp16 and fp32, packing on/off, checkpointing on/off
   (the loss falls, no skipped step), then cancel and resume;
3. a forced out-of-memory error (memory capped with ``set_per_process_memory_fraction``) that
   must end as a Failed result with "Out of memory" and the memory freed;
4. tokens/s and ``max_memory_allocated`` of our training step against a plain transformers +
   PEFT loop at the same settings (bf16, LoRA r=16 on all linear layers, 4 x 2048), padded and
   packed, on both models, with NVML GPU utilisation sampled during ours;
5. the estimate (``training.estimate``) against the measured peak memory and time per step.
Targets (issue #16): >= 1.5x the PEFT loop's tokens/s and <= 0.6x its peak memory on the
1B-class model, GPU utilisation > 90%, the estimate within 15%.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NEEDED = ("torch", "transformers", "peft", "tokenizers", "safetensors", "psutil", "platformdirs", "tomli_w", "gguf")


def check_imports() -> list[str]:
    """Modules this script needs that are missing."""
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


class Report:
    """Sections, their figures and checks; written as JSON after every section."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"sections": {}, "checks": []}
        self.log_file = (out / "gpu_check.log").open("w", encoding="utf-8")

    def log(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.data["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        self.log(f"{'PASS' if ok else 'FAIL'} {name} {detail}")

    def section(self, name: str, fn: Callable[[], dict]) -> None:
        self.log(f"--- {name}")
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # recorded; the next section still runs
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            self.check(f"{name} ran", False, result["error"])
        result["seconds"] = round(time.perf_counter() - start, 2)
        self.data["sections"][name] = result
        self.write()

    def write(self) -> None:
        self.data["failed"] = [c["name"] for c in self.data["checks"] if not c["ok"]]
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str), encoding="utf-8")


# --- shared builders --------------------------------------------------------------------------------

def tokenizer():
    """A byte-level BPE tokenizer with a ChatML template, trained in-process (vocab 300)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
              "class Point:\n    def __init__(self, x):\n        self.x = x\n", "import os\nprint(os.getcwd())\n"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    return fast


def llama_config(kind: str, vocab: int | None = None):
    """Llama shapes: ``small`` (tests), ``1b`` (TinyLlama-1.1B class), ``8b4`` (Llama-3-8B, 4 layers)."""
    from transformers import LlamaConfig

    shapes = {
        "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=300),
        "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                   num_key_value_heads=4, vocab_size=32000),
        "8b4": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=4, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
        "cpu": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1024),
    }
    cfg = dict(shapes[kind], max_position_embeddings=4096, tie_word_embeddings=False, attn_implementation="sdpa")
    if vocab is not None:
        cfg["vocab_size"] = vocab
    return LlamaConfig(**cfg)


def build_model(kind: str, device, dtype, seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(kind)).to(dtype)
    return model


def write_model_folder(folder: Path, kind: str) -> Path:
    import torch

    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        build_model(kind, "cpu", torch.bfloat16, seed=1).save_pretrained(folder)
        tokenizer().save_pretrained(folder)
    return folder


def write_dataset(path: Path, n: int, max_repeats: int = 1) -> Path:
    """A learnable prompt/completion set; ``max_repeats`` > 1 repeats words (about 8 tokens a
    repeat) so samples fill packed rows."""
    words = ["def", "add", "return", "class", "Point", "print", "import", "hello", "world", "self"]
    with path.open("w") as fh:
        for i in range(n):
            a, b = words[i % len(words)], words[(i * 3 + 1) % len(words)]
            reps = 1 + (i * 7) % max_repeats
            fh.write(json.dumps({"prompt": f"{a} {b} ->" * reps, "completion": f" {b} {a} {b}" * reps}) + "\n")
    return path


def make_job(tmp: Path, model_dir: Path, data: Path, device: str, dtype: str, **training):
    from senior_intern.config import TrainingJob

    job = TrainingJob(name="gpu-check", base_model_path=str(model_dir), dataset_path=str(data),
                      output_dir=str(tmp / "runs"), adapters_dir=str(tmp / "adapters"), validation_split=0.0)
    t = job.training
    t.epochs, t.batch_size, t.max_seq_length, t.learning_rate, t.warmup_steps = 50, 4, 128, 5e-3, 2
    t.eval_every, t.save_every, t.device, t.dtype, t.early_stopping_patience = 0, 0, device, dtype, 0
    for key, value in training.items():
        setattr(t, key, value)
    job.lora.rank, job.lora.alpha = 8, 16.0
    return job


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def free(device) -> None:
    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- 1. parity --------------------------------------------------------------------------------------

def parity(report: Report, device: str, dtypes: list) -> dict:
    import torch

    from senior_intern.config import LoraConfig, TrainingConfig
    from senior_intern.data import BatchLoader, Sample
    from senior_intern.lora import LoraModel
    from senior_intern.lora.layer import LoraLayer
    from senior_intern.training import attention
    from senior_intern.training.forward import CausalLMForward, training_inputs
    from senior_intern.training.loss import causal_lm_loss, chunked_causal_lm_loss
    from senior_intern.training.prepare import prepare_for_training

    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
    out: dict[str, Any] = {}
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        res: dict[str, Any] = {}
        g = torch.Generator().manual_seed(0)
        # fused LoRA linear vs float64 reference (float32 master factors)
        base = torch.nn.Linear(512, 768, bias=False).to(device, dtype)
        layer = LoraLayer(base, LoraConfig(rank=16, alpha=32.0, dropout=0.0), dtype=torch.float32).train()
        with torch.no_grad():
            layer.lora_B.weight.normal_(0, 0.05, generator=torch.Generator(device=device).manual_seed(1))
        x = torch.randn(2048, 512, generator=g).to(device, dtype).requires_grad_(True)
        assert layer.fused_ok(x), "the fused path is not taken"
        y = layer(x)
        y.float().square().sum().backward()
        x64, w64 = x.detach().double(), base.weight.double()
        a64 = layer.lora_A.weight.detach().double().requires_grad_(True)
        b64 = layer.lora_B.weight.detach().double().requires_grad_(True)
        y64 = x64 @ w64.t() + layer.scaling * (x64 @ a64.t()) @ b64.t()
        y64.square().sum().backward()
        res["lora_linear"] = {"out": rel_err(y, y64), "grad_A": rel_err(layer.lora_A.weight.grad, a64.grad),
                              "grad_B": rel_err(layer.lora_B.weight.grad, b64.grad),
                              "grad_dtype": str(layer.lora_A.weight.grad.dtype)}
        # model-level: fused MLP vs unfused, chunked loss vs logits, packed attention vs 4D mask
        samples = []
        for i, n in enumerate([70, 300, 45, 512, 120, 33, 250, 90, 400, 60]):
            ids = torch.randint(4, 300, (n,), generator=g).tolist()
            samples.append(Sample(ids, [-100] * (n // 4) + ids[n // 4:], f"s{i}"))
        packed = next(iter(BatchLoader(samples, 3, pad_id=3, max_seq_length=1024, packing=True, shuffle=False)))
        runs = {}
        for label, fuse, segments in (("unfused_mask", False, False), ("fused_mask", True, False), ("fused_packed", True, True)):
            model = build_model("small", device, dtype, seed=5)
            lora = LoraModel(model, LoraConfig(rank=8, alpha=16.0, dropout=0.0, target_modules=["all-linear"]),
                             dtype=torch.float32 if dtype != torch.float32 else None)
            with torch.no_grad():
                for p in lora.lora_parameters():
                    p.normal_(0.0, 0.02, generator=torch.Generator(device=p.device).manual_seed(p.numel()))
            lora.train()
            prepare_for_training(model, TrainingConfig(), fuse_mlp=fuse, segment_attention=segments)
            fwd = CausalLMForward(model, chunk_size=256)
            calls = {"n": 0}  # attention kernel calls in the forward pass
            real_sdpa, real_varlen = torch.nn.functional.scaled_dot_product_attention, attention.varlen_attn

            def counted(fn):
                def call(*a, **k):
                    calls["n"] += 1
                    return fn(*a, **k)
                return call

            torch.nn.functional.scaled_dot_product_attention = counted(real_sdpa)
            attention.varlen_attn = counted(real_varlen) if real_varlen is not None else None
            try:
                parts = fwd(training_inputs(packed, dtype, device, fwd.segments), packed.labels)
                forward_calls = calls["n"]
                parts.loss_sum.backward()
            finally:
                torch.nn.functional.scaled_dot_product_attention, attention.varlen_attn = real_sdpa, real_varlen
            runs[label] = (parts.loss_sum.detach().float().cpu(),
                           {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.requires_grad})
            if segments:
                res["attention_path"] = attention.attention_path(torch.device(device), dtype)
                res["attention_calls_per_layer"] = forward_calls / model.config.num_hidden_layers
                res["samples_per_batch"] = packed.n_samples
            del model, lora, fwd
            free(device)
        ref_loss, ref_grads = runs["unfused_mask"]
        for label in ("fused_mask", "fused_packed"):
            loss, grads = runs[label]
            res[label] = {"loss": rel_err(loss, ref_loss), "grads_max": max(rel_err(grads[k], ref_grads[k]) for k in ref_grads)}
        # chunked loss vs full logits
        hidden = torch.randn(4, 512, 256, generator=g).to(device, dtype)
        head = torch.nn.Linear(256, 4000, bias=False).to(device, dtype)
        labels = torch.randint(0, 4000, (4, 512), generator=g)
        labels[:, :100] = -100
        chunked = chunked_causal_lm_loss(hidden, head, labels, chunk_size=300).loss_sum
        full = causal_lm_loss(head(hidden), labels.to(device), reduction="sum")
        res["chunked_loss"] = rel_err(chunked, full)
        t = tol[dtype]
        ll = res["lora_linear"]
        report.check(f"parity {name} fused LoRA linear", max(ll["out"], ll["grad_A"], ll["grad_B"]) < t and ll["grad_dtype"] == "torch.float32", json.dumps(ll))
        for label in ("fused_mask", "fused_packed"):
            report.check(f"parity {name} {label}", res[label]["loss"] < t and res[label]["grads_max"] < 5 * t, json.dumps(res[label]))
        report.check(f"parity {name} chunked loss", res["chunked_loss"] < t, f"{res['chunked_loss']:.2e}")
        budget = 1 if res["attention_path"] != "per_sample" else float("inf")
        report.check(f"attention calls per layer {name} ({res['attention_path']})", res["attention_calls_per_layer"] <= budget,
                     f"{res['attention_calls_per_layer']}")
        out[name] = res
    return out


# --- 2. end to end ----------------------------------------------------------------------------------

def end_to_end(report: Report, device: str, dtypes: list[str], tmp: Path, steps: int) -> dict:
    from senior_intern.training.control import TrainingControl
    from senior_intern.training.engine import Trainer
    from senior_intern.training.events import Progress, TrainingStatus

    model_dir = write_model_folder(tmp / "small-model", "small")
    data = write_dataset(tmp / "data.jsonl", 96)
    out: dict[str, Any] = {}
    for dtype in dtypes:
        for packing in (False, True):
            for gc_on in (False, True):
                label = f"{dtype} packing={packing} checkpointing={gc_on}"
                job = make_job(tmp / label.replace(" ", "_"), model_dir, data, device, dtype, packing=packing,
                               gradient_checkpointing=gc_on, max_steps=steps)
                start = time.perf_counter()
                result = Trainer().run(job)
                losses = [m.loss for m in result.metrics_history]
                first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
                out[label] = {"status": result.status.value, "first_loss": first, "last_loss": last,
                              "skipped": result.skipped_steps, "seconds": round(time.perf_counter() - start, 2),
                              "error": result.error_message}
                # float16: the loss scaler may skip its first steps while it finds its scale
                allowed = 3 if dtype == "float16" else 0
                report.check(f"e2e {label}", result.status is TrainingStatus.COMPLETED and last < first * 0.8
                             and result.skipped_steps <= allowed, json.dumps(out[label]))
                free(device)
    # cancel, then resume to the end
    control = TrainingControl()

    def stop_at_5(e):
        if isinstance(e, Progress) and e.global_step == 5:
            control.cancel()

    job = make_job(tmp / "cancel", model_dir, data, device, dtypes[0], packing=True, max_steps=12)
    cancelled = Trainer().run(job, control, stop_at_5)
    resumed = Trainer().resume(cancelled.resume_checkpoint) if cancelled.resume_checkpoint else None
    out["cancel_resume"] = {"cancelled": cancelled.status.value, "checkpoint": cancelled.resume_checkpoint,
                            "resumed": resumed.status.value if resumed else None,
                            "steps": resumed.total_steps if resumed else None, "adapter": resumed.adapter_path if resumed else None}
    report.check("cancel then resume", cancelled.status is TrainingStatus.CANCELLED and resumed is not None
                 and resumed.status is TrainingStatus.COMPLETED and resumed.total_steps == 12, json.dumps(out["cancel_resume"]))
    return out


# --- 3. out of memory -------------------------------------------------------------------------------

def out_of_memory(report: Report, device: str, tmp: Path) -> dict:
    import torch

    from senior_intern.training.engine import Trainer
    from senior_intern.training.events import TrainingStatus

    if not device.startswith("cuda"):
        return {"skipped": "CUDA only (a CPU cannot be capped)"}
    model_dir = write_model_folder(tmp / "small-model", "small")
    data = write_dataset(tmp / "long.jsonl", 1500, max_repeats=40)
    free(device)
    before = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 1.5 * 2**30 / total))
    try:
        job = make_job(tmp / "oom", model_dir, data, device, "bfloat16", packing=True, batch_size=64,
                       max_seq_length=2048, max_steps=3)
        result = Trainer().run(job)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    after = torch.cuda.memory_allocated()
    out = {"status": result.status.value, "error": result.error_message, "allocated_before": before, "allocated_after": after}
    report.check("forced OOM ends Failed with advice", result.status is TrainingStatus.FAILED
                 and "Out of memory" in (result.error_message or ""), result.error_message or "")
    report.check("memory freed after OOM", after <= before + 64 * 2**20, f"{before} -> {after} bytes")
    return out


# --- 4. throughput and memory against transformers + PEFT ------------------------------------------

class Utilisation:
    """GPU utilisation samples (%, NVML or nvidia-smi) every 0.1 s while running."""

    def __init__(self, index: int = 0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._read = self._reader(index)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _reader(index: int):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:
            def smi() -> float:
                text = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                       f"--id={index}"], capture_output=True, text=True, timeout=5).stdout
                return float(text.strip().splitlines()[0])
            return smi

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(self._read())
            except Exception:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _batches(packed: bool, batch: int, length: int, vocab: int, seed: int = 0):
    """One micro-batch: padded (rows of random length, right-padded) or packed (full rows)."""
    import torch

    from senior_intern.data import BatchLoader, Sample

    g = torch.Generator().manual_seed(seed)
    lengths = (torch.randint(length // 8, length // 2, (batch * 6,), generator=g) if packed
               else torch.randint(length // 4, length + 1, (batch,), generator=g)).tolist()
    samples = []
    for i, n in enumerate(lengths):
        ids = torch.randint(4, vocab, (n,), generator=g).tolist()
        samples.append(Sample(ids, [-100] * (n // 5) + ids[n // 5:], f"s{i}"))
    loader = BatchLoader(samples, batch, pad_id=0, max_seq_length=length, packing=packed, shuffle=False)
    return next(iter(loader))


def _time_steps(step: Callable[[], None], device: str, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def throughput(report: Report, device: str, kinds: list[str], dtype_name: str, batch: int, length: int,
               warmup: int, steps: int) -> dict:
    import peft
    import torch

    from senior_intern.config import LoraConfig, TrainingConfig
    from senior_intern.lora import LoraModel
    from senior_intern.training.forward import CausalLMForward, training_inputs
    from senior_intern.training.prepare import prepare_for_training

    dtype = getattr(torch, dtype_name)
    cuda = device.startswith("cuda")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    out: dict[str, Any] = {}
    for kind in kinds:
        vocab = llama_config(kind).vocab_size
        for packed in (False, True):
            b = _batches(packed, batch, length, vocab)
            tokens = int(b.n_tokens)
            row: dict[str, Any] = {"tokens_per_step": tokens}
            # ours
            free(device)
            model = build_model(kind, device, dtype)
            lora = LoraModel(model, LoraConfig(rank=16, alpha=32.0, dropout=0.05, target_modules=targets),
                             dtype=torch.float32 if dtype != torch.float32 else None)
            lora.train()
            prepare_for_training(model, TrainingConfig())  # fused MLPs and segment attention, as a run
            fwd = CausalLMForward(model, chunk_size=1024)
            opt = torch.optim.AdamW(lora.lora_parameters(), lr=1e-4, fused=cuda)
            normaliser = max(b.n_trained_tokens, 1)

            def ours():
                parts = fwd(training_inputs(b, dtype, device, fwd.segments), b.labels)
                (parts.loss_sum / normaliser).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            free(device)
            with Utilisation() if cuda else _Null() as util:
                seconds = _time_steps(ours, device, warmup, steps)
            row["ours"] = {"seconds_per_step": seconds, "tokens_per_s": tokens / seconds,
                           "peak_memory": torch.cuda.max_memory_allocated() if cuda else None,
                           "gpu_utilisation_mean": (sum(util.samples) / len(util.samples)) if util.samples else None}
            del model, lora, fwd, opt
            free(device)
            # transformers + PEFT
            model = build_model(kind, device, dtype)
            model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets))
            model.train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=cuda)
            ids, labels = b.input_ids.to(device), b.labels.to(device)
            kwargs = {"position_ids": b.position_ids.to(device)} if packed else {"attention_mask": b.attention_mask.to(device)}

            def baseline():
                model(input_ids=ids, labels=labels, **kwargs).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            free(device)
            seconds = _time_steps(baseline, device, warmup, steps)
            row["peft"] = {"seconds_per_step": seconds, "tokens_per_s": tokens / seconds,
                           "peak_memory": torch.cuda.max_memory_allocated() if cuda else None}
            del model, opt
            free(device)
            row["speedup"] = row["ours"]["tokens_per_s"] / row["peft"]["tokens_per_s"]
            if cuda:
                row["memory_ratio"] = row["ours"]["peak_memory"] / row["peft"]["peak_memory"]
            label = f"{kind} {'packed' if packed else 'padded'}"
            out[label] = row
            report.log(f"{label}: {json.dumps(row)}")
            if kind == "1b" and cuda:
                report.check(f"throughput {label} >= 1.5x PEFT", row["speedup"] >= 1.5, f"{row['speedup']:.2f}x")
                report.check(f"peak memory {label} <= 0.6x PEFT", row["memory_ratio"] <= 0.6, f"{row['memory_ratio']:.2f}x")
                util_mean = row["ours"]["gpu_utilisation_mean"]
                report.check(f"GPU utilisation {label} > 90%", util_mean is not None and util_mean > 90, f"{util_mean}")
    return out


class _Null:
    samples: list[float] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


# --- 5. estimate against measured -------------------------------------------------------------------

def estimate_vs_measured(report: Report, device: str, kind: str, dtype: str, batch: int, length: int, tmp: Path,
                         steps: int) -> dict:
    import torch

    from senior_intern.training.engine import Trainer
    from senior_intern.training.estimate import estimate
    from senior_intern.training.events import Progress

    cuda = device.startswith("cuda")
    model_dir = write_model_folder(tmp / f"{kind}-model", kind)
    data = write_dataset(tmp / f"long-{length}.jsonl", 1500, max_repeats=max(1, length // 50))
    job = make_job(tmp / "estimate", model_dir, data, device, dtype, packing=True, batch_size=batch,
                   max_seq_length=length, max_steps=steps, gradient_checkpointing=True)
    job.lora.rank, job.lora.alpha = 16, 32.0
    est = estimate(job)
    free(device)
    times: list[float] = []

    def on_event(e):
        if isinstance(e, Progress):
            times.append(time.perf_counter())

    result = Trainer().run(job, on_event=on_event)
    measured_peak = torch.cuda.max_memory_allocated() if cuda else None
    per_step = (times[-1] - times[2]) / (len(times) - 3) if len(times) > 3 else None
    out = {"status": result.status.value, "estimated_peak": est.peak_memory, "measured_peak": measured_peak,
           "estimated_seconds_per_step": est.seconds_per_step, "measured_seconds_per_step": per_step,
           "memory": dict(est.memory.items())}
    if measured_peak:
        out["memory_error"] = est.peak_memory / measured_peak - 1
        report.check("estimate peak memory within 15%", abs(out["memory_error"]) <= 0.15, f"{out['memory_error']:+.1%}")
    if per_step:
        out["time_error"] = est.seconds_per_step / per_step - 1
        report.check("estimate time per step within 15%", abs(out["time_error"]) <= 0.15, f"{out['time_error']:+.1%}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke check with tiny shapes)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "out"))
    parser.add_argument("--skip", nargs="*", default=[], help="sections to skip: parity e2e oom throughput estimate")
    args = parser.parse_args(argv)
    missing = check_imports()
    if missing:
        print(f"Missing modules: {', '.join(missing)}; carry their wheels (see the docstring)", file=sys.stderr)
        return 2
    import tempfile

    import torch

    os.environ.setdefault("SENIOR_INTERN_HOME", tempfile.mkdtemp(prefix="gpu-check-home-"))
    report = Report(args.out)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        report.check("CUDA available", False, "torch.cuda.is_available() is False; use --device cpu for a smoke check")
        report.write()
        return 1
    from senior_intern.training import attention

    report.data["environment"] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "capability": torch.cuda.get_device_capability(0) if cuda else None,
        "varlen_attn": attention.varlen_attn is not None, "python": sys.version.split()[0],
    }
    report.log(json.dumps(report.data["environment"]))
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if cuda:
        parity_dtypes = [torch.float32, torch.bfloat16, torch.float16]
        e2e_dtypes, steps = ["bfloat16", "float16", "float32"], 40
        kinds, dtype, batch, length, warmup, timed = ["1b", "8b4"], "bfloat16", 4, 2048, 2, 6
        est = ("1b", "bfloat16", 4, 2048, 10)
    else:
        parity_dtypes = [torch.float32, torch.bfloat16]
        e2e_dtypes, steps = ["float32"], 25
        kinds, dtype, batch, length, warmup, timed = ["cpu"], "float32", 2, 256, 1, 2
        est = ("small", "float32", 2, 256, 5)
    sections = {
        "parity": lambda: parity(report, args.device, parity_dtypes),
        "e2e": lambda: end_to_end(report, args.device, e2e_dtypes, tmp, steps),
        "oom": lambda: out_of_memory(report, args.device, tmp),
        "throughput": lambda: throughput(report, args.device, kinds, dtype, batch, length, warmup, timed),
        "estimate": lambda: estimate_vs_measured(report, args.device, *est[:4], tmp, est[4]),
    }
    for name, fn in sections.items():
        if name not in args.skip:
            report.section(name, fn)
    report.write()
    failed = report.data["failed"]
    report.log(f"{len(report.data['checks']) - len(failed)} of {len(report.data['checks'])} checks passed"
               + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
