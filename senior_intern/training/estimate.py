"""Pre-flight estimate of a training job: steps, parameters, memory, disk, time, and whether it fits.

    est = estimate(job)                # arithmetic on shapes: well under a second once cached
    est = estimate(job, probe=True)    # also times real steps of the job in a fresh process

The step counts come from the real dataset, tokenised and batched as a run does it. Memory is
the sum of its parts (``MemoryBreakdown``): base weights as a run holds them (compact GGUF blocks
or int8/int4 linears, the rest in the compute dtype: ``ModelFacts.base_weight_bytes``), LoRA factors,
their gradients, optimizer state, the activations autograd keeps (``estimate_model``), the
loss's logits chunk, and what the allocator and framework add (``ALLOCATOR_SLACK``: on the CPU
the glibc heap keeps freed chunks, measured on the demo model from 128 to 2,048 tokens per
batch). Time divides the step's FLOPs by this device's measured matmul rate times
``EFFICIENCY``, adds a dispatch cost per layer and, for a compact base, the dequantisation of its
weights on every pass over them (``estimate_model.dequant_flops``); ``probe=True`` measures the
step instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from senior_intern.config import TrainingJob
from senior_intern.hardware.detect import detect_devices, free_memory, resolve_device, resolve_dtype
from senior_intern.hardware.metrics import format_bytes
from senior_intern.training import estimate_model as em
from senior_intern.training.estimate_data import DataFacts, data_facts

SAFETY_MARGIN = 0.10
"""Share of free memory kept in reserve: a job fits when its peak is at most 90% of the free memory."""
ALLOCATOR_SLACK = {"cpu": 0.10, "cuda": 0.10, "mps": 0.10}
"""Memory the allocator holds beyond the live activations, as a share of them. CPU (glibc, its mmap
threshold fixed by ``hardware.allocator.limit_heap_growth``): small freed chunks stay in the heap.
With 0.2 and the CPU overhead below, the demo GGUF's estimates (float32 and bfloat16, 1 x 128 to
2 x 512, with and without checkpointing) erred -3%..+10% against the measured peaks
(``benchmarks/estimate_accuracy.py``; peaks read with ``peak_rss_bytes``) and +10..+23% in the
test's runs; 0.1 (0.2 while the heap grew) centres both."""
CPU_CHECKPOINT_RETAINED = 0.30
"""With gradient checkpointing on the CPU, glibc keeps some of the recomputed layers' freed buffers:
the resident growth measured 0.28 times the activations of the same run without checkpointing
(demo GGUF, 2 x 512 float32; 0.61-0.76 before the base stayed compact)."""
DEVICE_OVERHEAD = {"cpu": 130 * 2**20, "cuda": 600 * 2**20, "mps": 300 * 2**20}
"""Bytes the framework takes besides tensors: on the CPU runtime buffers and the first step's one-off
allocations (refitted to the demo GGUF's runs, 1 x 128 to 2 x 512, once large freed blocks went
back to the system: 170 MB before); the CUDA context and cuBLAS workspace."""
EFFICIENCY = {("cpu", 4): 0.68, ("cpu", 2): 0.47, ("cuda", 4): 0.35, ("cuda", 2): 0.35, ("mps", 4): 0.30, ("mps", 2): 0.30}
"""Share of the measured matmul rate a whole training step achieves, by device and dtype size (norms,
attention, LoRA's thin float32 matmuls and dtype casts run slower than one large matmul; on the CPU
bfloat16 steps gain far less than bfloat16 matmuls do). CPU figures fitted to the demo model's
measured steps (``benchmarks/estimate_accuracy.py`` on an idle machine; refitted with the compact
base's dequantisation counted apart, ``estimate_model.dequant_flops``: bfloat16 0.39 before)."""
OP_OVERHEAD_S = {"cpu": 0.005, "cuda": 0.0005, "mps": 0.002}
"""Seconds per decoder layer per micro-batch besides its FLOPs: dispatch of some 150 small ops. CPU:
refitted to the demo GGUF's short steps once dequantisation was counted apart (0.0016 before, when
the steps at 1 x 128 and 2 x 256 came out 41% and 11% under the measured time)."""
STEP_OVERHEAD_S = {"cpu": 0.03, "cuda": 0.01, "mps": 0.02}
"""Seconds per optimizer step besides the micro-batches: clipping, the optimizer, metrics."""
LONG_RUN_S = 24 * 3600
PROBE_STEPS = 4  # one warm-up step, then three timed steps


@dataclass(frozen=True)
class MemoryBreakdown:
    """Peak memory of a run, in bytes, by part (the sum is ``total``)."""

    weights: int  # frozen base weights in the compute dtype
    lora_parameters: int
    gradients: int  # of the LoRA parameters
    optimizer_state: int
    activations: int  # kept for backward, with the allocator's slack
    loss_logits: int  # one chunk of the chunked loss
    overhead: int  # framework, runtime, CUDA context

    @property
    def total(self) -> int:
        """Sum of the parts."""
        return sum(dataclasses.astuple(self))

    def items(self) -> list[tuple[str, int]]:
        """``(label, bytes)`` per part, for printing."""
        labels = ("base weights", "LoRA parameters", "gradients", "optimizer state", "activations", "loss logits", "overhead")
        return list(zip(labels, dataclasses.astuple(self)))


@dataclass(frozen=True)
class TrainingEstimate:
    """What a job will need and take, before it starts (spec ``TrainingEstimate``)."""

    total_steps: int
    steps_per_epoch: int
    trainable_parameters: int
    total_parameters: int
    memory: MemoryBreakdown
    disk_bytes: int  # checkpoints kept (max_checkpoints, + best with validation) and the adapter
    duration_seconds: float
    seconds_per_step: float
    duration_method: str  # "flops" or "probe"
    device: str
    dtype: str
    available_memory: int | None  # free memory of the device (system RAM for the CPU)
    fits: bool
    recommended_device: str
    recommended_batch_size: int  # largest micro-batch that fits (0 when not even 1 fits)
    batch_size: int
    sequence_length: int  # padded width of the widest batch (at most max_seq_length)
    tokens_per_step: int  # token positions per optimizer step (padding included), on average
    warnings: tuple[str, ...] = ()
    measured_peak_memory: int | None = None  # from the probe, when it ran

    @property
    def peak_memory(self) -> int:
        """Estimated peak memory of the run in bytes (spec ``EstimatedVramBytes``)."""
        return self.memory.total


# --- memory of one configuration ---------------------------------------------------------------

def _shape(job: TrainingJob, dtype: torch.dtype, batch: int, width: int, checkpointing: bool | None = None,
           kind: str = "cpu") -> em.StepShape:
    t = job.training
    return em.StepShape(batch, width, dtype, job.lora.dropout, t.packing,
                        t.gradient_checkpointing if checkpointing is None else checkpointing,
                        t.loss_chunk_size, t.optimizer, t.momentum, kind)


def _memory(facts: em.ModelFacts, shape: em.StepShape, kind: str) -> MemoryBreakdown:
    params = facts.trainable_parameters * em.dtype_bytes(em.lora_dtype(shape.dtype))
    return MemoryBreakdown(
        weights=facts.base_weight_bytes(em.dtype_bytes(shape.dtype)),
        lora_parameters=params,
        gradients=params,
        optimizer_state=em.optimizer_states(shape) * params,
        activations=_activations(facts, shape, kind),
        loss_logits=em.loss_bytes(facts, shape),
        overhead=DEVICE_OVERHEAD[kind],
    )


def _activations(facts: em.ModelFacts, shape: em.StepShape, kind: str) -> int:
    live = em.activation_bytes(facts, shape) * (1 + ALLOCATOR_SLACK[kind])
    if kind == "cpu" and shape.checkpointing:
        full = em.activation_bytes(facts, dataclasses.replace(shape, checkpointing=False))
        live = max(live, CPU_CHECKPOINT_RETAINED * full)
    return int(live)


def _fits(total: int, available: int | None) -> bool:
    return available is None or total <= available * (1 - SAFETY_MARGIN)


def _largest_fitting(fits_at, high: int) -> int:
    """Largest n in 1..high with ``fits_at(n)`` (monotone), 0 when even 1 does not fit."""
    if not fits_at(1):
        return 0
    low = 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits_at(mid) else (low, mid - 1)
    return low


def _available(device: torch.device) -> int | None:
    return free_memory(device)


def check_base_fits(job: TrainingJob, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before anything is loaded, a training base whose weights alone exceed the free
    memory of ``device`` (``models.holding.check_weights_fit``), quoting the estimate's peak."""
    from senior_intern.models.holding import check_weights_fit

    def peak() -> str:
        try:
            return f"; the whole run needs about {format_bytes(estimate(job).peak_memory)} at its peak (the pre-flight estimate)"
        except (ValueError, OSError, RuntimeError):
            return ""

    check_weights_fit(job.base_model_path, job.training.base_quantization, dtype, device, _available(device), peak)


# --- time --------------------------------------------------------------------------------------

def _matmul_rate(facts: em.ModelFacts, device: torch.device, dtype: torch.dtype, tokens: int) -> float:
    """The measured rate of a matmul shaped like the model's at this step's tokens (FLOP/s)."""
    m = max(64, min(tokens, 512 if device.type == "cpu" else 8192))  # a GPU needs large products to be busy
    return em.matmul_flops_per_second(str(device), dtype, m, min(facts.hidden_size, 2048), min(facts.intermediate_size, 4096))


def _flops_rate(facts: em.ModelFacts, device: torch.device, dtype: torch.dtype, tokens: int) -> float:
    return _matmul_rate(facts, device, dtype, tokens) * EFFICIENCY.get((device.type, em.dtype_bytes(dtype)), 0.3)


def _eval_count(job: TrainingJob, data: DataFacts) -> int:
    if not data.val_tokens:
        return 0
    t = job.training
    epochs = math.ceil(data.total_steps / data.steps_per_epoch)
    return (data.total_steps // t.eval_every if t.eval_every else 0) + epochs


def _disk(job: TrainingJob, facts: em.ModelFacts, dtype: torch.dtype, data: DataFacts) -> int:
    adapter = facts.trainable_parameters * em.dtype_bytes(em.lora_dtype(dtype))
    shape = _shape(job, dtype, 1, 8)
    checkpoint = adapter + em.optimizer_states(shape) * adapter + 300 * data.total_steps + 64 * 1024
    kept = job.training.max_checkpoints + (1 if data.val_tokens else 0)
    return kept * checkpoint + adapter + 64 * 1024


# Runs in a fresh interpreter: the job's first steps, their end times, and the peak memory growth.
_PROBE_CHILD = """
import json, sys, time
import psutil, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Progress, StateChanged, TrainingState
job = TrainingJob.load(sys.argv[1])
base = psutil.Process().memory_info().rss
stamps, mps_peak = [], 0
mps = job.training.device != "cpu" and torch.backends.mps.is_available()
def on_event(e):
    global mps_peak
    if isinstance(e, Progress) or (isinstance(e, StateChanged) and e.new is TrainingState.TRAINING and not stamps):
        stamps.append(time.perf_counter())
    if mps:  # Metal's memory is not in the RSS: sample what its driver holds at every step
        mps_peak = max(mps_peak, torch.mps.driver_allocated_memory())
result = Trainer().run(job, None, on_event)
from senior_intern.hardware.monitor import peak_rss_bytes
peak = peak_rss_bytes() - base
if job.training.device != "cpu" and torch.cuda.is_available() and torch.cuda.max_memory_reserved():
    peak = torch.cuda.max_memory_reserved()
elif mps:
    peak = max(peak, mps_peak)
print(json.dumps({"error": result.error_message, "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])],
                  "peak_bytes": peak}))
"""


def _probe(job: TrainingJob) -> tuple[float, int | None]:
    """Median seconds per optimizer step over real steps of ``job`` in a fresh process (after one
    warm-up step), and the peak memory it reached (RSS growth; CUDA: bytes the allocator reserved;
    MPS: the larger of the RSS growth and the Metal driver's memory sampled at every step)."""
    with tempfile.TemporaryDirectory(prefix="senior-intern-probe-") as tmp:
        training = dataclasses.replace(job.training, max_steps=PROBE_STEPS, eval_every=0, save_every=0, early_stopping_patience=0)
        probe = dataclasses.replace(job, name="probe", output_dir=str(Path(tmp) / "runs"), adapters_dir=str(Path(tmp) / "adapters"),
                                    validation_path=None, validation_split=0.0, training=training)
        path = probe.save(Path(tmp) / "job.toml")
        out = subprocess.run([sys.executable, "-c", _PROBE_CHILD, str(path)], capture_output=True, text=True,
                             env=dict(os.environ), timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"The probe run failed (exit {out.returncode}): {out.stderr.strip()[-1500:]}")
    report = json.loads(lines[-1])
    if report["error"]:
        raise ValueError(f"The probe run failed: {report['error']}")
    steps = report["step_seconds"]
    if not steps:
        raise ValueError("The probe run ended before its first step; check the job with 'senior-intern validate'")
    return statistics.median(steps[1:] or steps), report["peak_bytes"]


# --- the estimate ------------------------------------------------------------------------------

def estimate(job: TrainingJob, *, probe: bool = False) -> TrainingEstimate:
    """Estimate steps, trainable parameters, peak memory, disk and duration of ``job``.

    Loads the tokenizer and the dataset (cached per process) and builds the model on the meta
    device; no weights are read. ``probe=True`` also runs a few real steps of the job in a
    fresh process (about a minute for the demo model) and takes the time per step, and the
    measured peak memory, from them. Errors in the job (missing files, a device or dtype this
    machine lacks) raise ``ValueError`` / ``FileNotFoundError`` naming what to fix.
    """
    t = job.training
    for name, path in (("base_model_path", job.base_model_path), ("dataset_path", job.dataset_path)):
        if not path or not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{name}: {path or '(empty)'} does not exist; set it to an existing file or folder")
    device = resolve_device(t.device)
    dtype = resolve_dtype(t.dtype, device)
    facts = em.model_facts(job, dtype)
    data = data_facts(job)
    kind = device.type
    available = _available(device)
    batch = min(t.batch_size, data.rows)  # a micro-batch never holds more rows than the epoch has
    memory = _memory(facts, _shape(job, dtype, batch, data.width, kind=kind), kind)
    fits = _fits(memory.total, available)
    fit_batch = _largest_fitting(lambda b: _fits(_memory(facts, _shape(job, dtype, b, data.width, kind=kind), kind).total, available), data.rows)

    timing = _shape(job, dtype, batch, max(8, round(data.tokens_per_batch / batch)))
    micro_flops = em.step_flops(facts, timing, data.trained_fraction)
    micro_overhead = OP_OVERHEAD_S[kind] * facts.num_layers * (2 if t.gradient_checkpointing else 1)
    dequant = em.dequant_flops(facts, timing, data.trained_fraction)  # compact base: float32 matmul FLOPs
    eval_dequant = em.dequant_flops(facts, timing, data.trained_fraction, backward=False)
    rate32 = _matmul_rate(facts, device, torch.float32, timing.tokens) if dequant else 1.0  # DEQUANT_FLOPS' unit
    micro_overhead += dequant / rate32
    measured_peak = None
    if probe:
        seconds_per_step, measured_peak = _probe(job)
        compute = seconds_per_step - STEP_OVERHEAD_S[kind] - t.gradient_accumulation_steps * micro_overhead
        rate = micro_flops * t.gradient_accumulation_steps / max(compute, 0.05 * seconds_per_step)
    else:
        rate = _flops_rate(facts, device, dtype, timing.tokens)
        seconds_per_step = t.gradient_accumulation_steps * (micro_flops / rate + micro_overhead) + STEP_OVERHEAD_S[kind]
    eval_flops = data.val_tokens * em.eval_flops_per_token(facts, timing.seq_len, t.packing, data.trained_fraction)
    eval_seconds = eval_flops / rate + data.val_batches * (OP_OVERHEAD_S[kind] * facts.num_layers / 2
                                                           + eval_dequant / rate32)  # forward only
    duration = data.total_steps * seconds_per_step + _eval_count(job, data) * eval_seconds

    rec_device, rec_batch = (str(device), fit_batch) if fit_batch else _other_device(job, facts, data, device)
    warnings = _warnings(job, facts, data, dtype, memory.total, available, fits, fit_batch, duration, str(device), rec_device)
    disk = _disk(job, facts, dtype, data)
    free_disk = _free_disk(job.run_dir)
    if free_disk is not None and disk > free_disk:
        warnings.append(f"Checkpoints and the adapter need about {format_bytes(disk)} but the output folder has "
                        f"{format_bytes(free_disk)} free; free some space or lower max_checkpoints")
    return TrainingEstimate(
        total_steps=data.total_steps, steps_per_epoch=data.steps_per_epoch,
        trainable_parameters=facts.trainable_parameters, total_parameters=facts.base_parameters + facts.trainable_parameters,
        memory=memory, disk_bytes=disk, duration_seconds=duration, seconds_per_step=seconds_per_step,
        duration_method="probe" if probe else "flops", device=str(device), dtype=str(dtype).removeprefix("torch."),
        available_memory=available, fits=fits, recommended_device=rec_device, recommended_batch_size=rec_batch,
        batch_size=t.batch_size, sequence_length=data.width, tokens_per_step=round(data.tokens_per_batch * t.gradient_accumulation_steps),
        warnings=tuple(warnings), measured_peak_memory=measured_peak,
    )


def _other_device(job: TrainingJob, facts: em.ModelFacts, data: DataFacts, current: torch.device) -> tuple[str, int]:
    """A device where at least batch 1 fits (GPUs first), with its largest batch; else (current, 0)."""
    for d in detect_devices():
        if d.name == str(current) or (d.kind == current.type and d.kind != "cuda"):
            continue
        try:
            dtype = resolve_dtype(job.training.dtype, d.name)
        except ValueError:
            dtype = resolve_dtype("auto", d.name)
        fits_at = lambda b: _fits(_memory(facts, _shape(job, dtype, b, data.width, kind=d.kind), d.kind).total, d.free_memory)  # noqa: E731
        best = _largest_fitting(fits_at, data.rows)
        if best:
            return d.name, best
    return str(current), 0


def _free_disk(folder: Path) -> int | None:
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds / 60:.0f} minutes"


def _warnings(job, facts, data, dtype, peak, available, fits, batch_fit, duration, device, rec_device) -> list[str]:
    t = job.training
    out: list[str] = []
    if not fits:
        need = f"The run needs about {format_bytes(peak)} but {device} has {format_bytes(available)} free"
        if batch_fit:
            ga = math.ceil(t.batch_size * t.gradient_accumulation_steps / batch_fit)
            out.append(f"{need}: lower batch_size to {batch_fit} (and raise gradient_accumulation_steps to {ga} "
                       f"to keep the effective batch of {t.batch_size * t.gradient_accumulation_steps})")
        else:
            out.append(f"{need}, even at batch_size 1: " + _single_batch_advice(job, facts, data, dtype, available, device))
            if rec_device != device:
                out.append(f"{rec_device} has room for this job; set device to {rec_device}")
    if t.warmup_steps >= data.total_steps:
        out.append(f"warmup_steps ({t.warmup_steps}) is not shorter than the run ({data.total_steps} steps): the learning rate "
                   f"never reaches its peak; lower warmup_steps to about {max(1, data.total_steps // 10)}")
    if duration > LONG_RUN_S:
        out.append(f"The run would take about {_hours(duration)} on {device}; set max_steps, fewer epochs or a shorter "
                   "max_seq_length, or train on a GPU")
    if facts.context_length and t.max_seq_length > facts.context_length:
        out.append(f"max_seq_length ({t.max_seq_length}) is longer than the model's context length "
                   f"({facts.context_length}); lower max_seq_length to {facts.context_length} or less")
    if data.truncated:
        out.append(f"{data.truncated} samples are longer than max_seq_length ({t.max_seq_length}) and are truncated; "
                   "raise max_seq_length to keep them whole")
    return out


def _single_batch_advice(job, facts, data, dtype, available, device) -> str:
    """Which setting to change when batch 1 does not fit: checkpointing, sequence length, dtype."""
    kind = torch.device(device).type
    t = job.training
    tips = []
    if not t.gradient_checkpointing and _fits(_memory(facts, _shape(job, dtype, 1, data.width, True, kind), kind).total, available):
        tips.append("turn on gradient_checkpointing")
    seq = _largest_fitting(lambda n: _fits(_memory(facts, _shape(job, dtype, 1, 64 * n, kind=kind), kind).total, available), data.width // 64)
    if seq:
        tips.append(f"lower max_seq_length to {64 * seq}")
    if dtype == torch.float32 and kind != "cpu":
        tips.append("use dtype bfloat16 or float16")
    return "; or ".join(tips) if tips else "use a smaller base model or a device with more memory"
