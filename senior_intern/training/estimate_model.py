"""What a training step costs, from the model's shapes: memory per part and FLOPs per token.

``model_facts(job)`` reads the base model's config and builds the model on the ``meta`` device
(no weights, no memory), wraps it with ``LoraModel`` exactly as a run does, and keeps the shapes
that matter. ``step_memory`` and ``step_flops`` are plain arithmetic on those facts, so the
estimate can try many batch sizes in microseconds.

Memory follows what autograd keeps for a Llama-family block with a frozen base (measured with
``torch.autograd.graph.saved_tensors_hooks`` on the demo model: the formula below matches the
saved bytes to 0.1%). Per token and decoder layer, with ``s`` the compute dtype's bytes and
``a`` the LoRA factors' bytes:

- each RMSNorm keeps its float32 input (``4 H``);
- attention keeps q, k, v and the output in ``s`` (k and v repeated to every query head when a
  mask is passed, as transformers' SDPA path does) and a float32 log-sum-exp per head;
- the MLP keeps gate, SiLU(gate) and up (``3 I s``);
- each LoRA linear keeps the module's own input in ``s`` (shared by q/k/v and by gate/up), its
  rank-``r`` intermediate in ``s``, and with dropout its drop plan (``_lora_input_bytes``).

Frozen base weights keep nothing for their own gradient. With gradient checkpointing a layer
keeps only its input, and one layer's activations come back during backward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from senior_intern.config import LoraConfig, OptimizerType, TrainingJob
from senior_intern.layout import write_text_atomic
from senior_intern.models.tokenizer import model_folder

# Modules that read the same input tensor in a Llama-family block (their LoRA inputs are shared).
_INPUT_GROUPS = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in",
                 "up_proj": "mlp_in", "o_proj": "attn_out", "down_proj": "mlp_mid"}
# Inputs autograd already keeps for other reasons (the attention output is saved by SDPA).
_ALREADY_SAVED = {"attn_out"}
_OPTIMIZER_STATES = {OptimizerType.ADAMW: 2, OptimizerType.ADAM: 2}


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its qualified name, in/out features and its LoRA trainable elements."""

    name: str
    in_features: int
    out_features: int
    parameters: int
    embedding: bool = False


@dataclass(frozen=True)
class ModelFacts:
    """The shapes of a base model with its LoRA wrappers, as a run would build them."""

    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    base_parameters: int  # frozen base elements (tied tensors once)
    trainable_parameters: int  # exactly LoraModel.trainable_parameter_count
    linear_macs: int  # multiply-adds per token of every decoder linear layer (head excluded)
    head_fused: bool  # the LM head is a plain nn.Linear: the fused loss path
    context_length: int  # max_position_embeddings (0 when the config does not say)
    lora_modules: tuple[LoraModule, ...] = field(default_factory=tuple)
    rank: int = 16
    compact_elements: int = 0  # base elements held compact (GGUF blocks, int8/int4) instead of in the compute dtype
    compact_bytes: int = 0  # bytes those take
    compact_decoder: tuple[tuple[str, int], ...] = ()  # (block type, elements) of compact decoder linear weights
    compact_head: tuple[str, int] | None = None  # (block type, elements) of a compact LM head's weight

    def base_weight_bytes(self, s: int) -> int:
        """Bytes of the frozen base in memory with ``s`` bytes per dense element: the dense part,
        the compact part as held, and while compact, the float32 scratch weights it dequantises
        into (``models.quantized``: one buffer per projection shape, q/o, k/v, gate/up and down,
        plus one slice of a compact LM head)."""
        from senior_intern.models.quantized import SLICE_BYTES

        dense = (self.base_parameters - self.compact_elements) * s
        if not self.compact_elements:
            return dense
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        scratch = 4 * (q * h + kv * h + 2 * i * h) + min(4 * self.vocab_size * h, SLICE_BYTES)
        return dense + self.compact_bytes + scratch

    @property
    def lora_macs(self) -> int:
        """Multiply-adds per token of all LoRA factors (``r (in + out)`` per adapted linear)."""
        return sum(self.rank * (m.in_features + m.out_features) for m in self.lora_modules if not m.embedding)


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def lora_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the LoRA factors under a base in ``dtype``: float32 under bfloat16/float16 (as a run keeps them)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


@functools.lru_cache(maxsize=8)
def _load_config(folder: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, local_files_only=True)


def _lora_key(cfg: LoraConfig) -> tuple:
    return (cfg.rank, cfg.alpha, tuple(cfg.target_modules), str(cfg.bias), cfg.apply_to_embeddings, cfg.apply_to_lm_head)


@functools.lru_cache(maxsize=16)
def _facts(folder: str, lora_key: tuple, factor_dtype: torch.dtype) -> ModelFacts:
    from transformers import AutoModelForCausalLM

    from senior_intern.lora import LoraLayer, LoraModel

    config = _load_config(folder)
    rank, alpha, targets, bias, embeddings, head = lora_key
    cfg = LoraConfig(rank=rank, alpha=alpha, target_modules=list(targets), bias=bias,
                     apply_to_embeddings=embeddings, apply_to_lm_head=head)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    base_parameters = sum(p.numel() for p in model.parameters())
    out_embeddings = model.get_output_embeddings()
    head_fused = type(out_embeddings) is nn.Linear and not cfg.apply_to_lm_head
    linear_macs = sum(m.in_features * m.out_features for m in model.modules()
                      if isinstance(m, nn.Linear) and m is not out_embeddings)
    lora = LoraModel(model, cfg, dtype=factor_dtype)
    modules = tuple(
        LoraModule(name, layer.in_features, layer.out_features, layer.trainable_parameter_count,
                   embedding=not isinstance(layer, LoraLayer))
        for name, layer in lora.lora_layers().items()
    )
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return ModelFacts(
        architecture=type(model).__name__,
        num_layers=int(text.num_hidden_layers),
        hidden_size=hidden,
        intermediate_size=int(getattr(text, "intermediate_size", 4 * hidden) or 4 * hidden),
        num_heads=heads,
        num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        vocab_size=int(text.vocab_size),
        base_parameters=base_parameters,
        trainable_parameters=lora.trainable_parameter_count,
        linear_macs=linear_macs,
        head_fused=head_fused,
        context_length=int(getattr(text, "max_position_embeddings", 0) or 0),
        lora_modules=modules,
        rank=rank,
    )


def model_facts(job: TrainingJob, dtype: torch.dtype) -> ModelFacts:
    """Shapes and exact trainable-parameter count of ``job``'s model wrapped with ``job.lora``,
    built on the meta device (a few milliseconds once the config is cached), with how much of
    the base a run holds compact (a GGUF file's linear weights; ``base_quantization``)."""
    facts = _facts(str(model_folder(job.base_model_path)), _lora_key(job.lora), lora_dtype(dtype))
    from senior_intern.models.holding import base_holding

    # the same reading ``model info`` shows: how ``load_base_model`` will hold the base
    holding = base_holding(str(job.base_model_path), job.training.base_quantization)
    head = None if holding.head is None else (holding.head.kind, holding.head.elements)
    return dataclasses.replace(facts, compact_elements=sum(p.elements for p in holding.compact),
                               compact_bytes=holding.compact_bytes,
                               compact_decoder=tuple(sorted(holding.decoder_parts().items())), compact_head=head)


# --- memory ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepShape:
    """One micro-batch as the memory and FLOP formulas see it."""

    batch_size: int
    seq_len: int  # padded width of the widest batch
    dtype: torch.dtype
    dropout: float
    packing: bool
    checkpointing: bool
    loss_chunk: int
    optimizer: OptimizerType = OptimizerType.ADAMW
    momentum: float = 0.9
    device_kind: str = "cpu"  # "cpu", "cuda" or "mps": how dropout plans are kept

    @property
    def tokens(self) -> int:
        """Token positions in the micro-batch (padding included): ``batch_size * seq_len``."""
        return self.batch_size * self.seq_len

    @property
    def has_mask(self) -> bool:
        """Whether attention gets an explicit mask: padding in an unpacked batch of several rows.
        Packed rows attend per sample without one (``training.attention``)."""
        return not self.packing and self.batch_size > 1


def _lora_input_bytes(facts: ModelFacts, shape: StepShape, s: int, a: int) -> int:
    """Bytes per token the LoRA branches keep, as the fused LoRA function saves them
    (``lora.functional.LoraLinearFunction``): the module's own input in the compute dtype (one
    tensor shared by q/k/v and by gate/up; o_proj's input is attention's output, saved already),
    the rank-r intermediate in the compute dtype (float32 master factors are cast in), and with
    dropout the drop plan: on the CPU the int64 positions of the dropped elements (``8 p`` bytes
    per element), elsewhere a one-byte mask. LoRA embeddings keep their rank-r rows in ``a``."""
    plan = (8 * shape.dropout if shape.device_kind == "cpu" else 1.0) if shape.dropout > 0 else 0.0
    total, shared_inputs = 0.0, set()
    for m in facts.lora_modules:
        if m.embedding:
            total += facts.rank * a
            continue
        total += facts.rank * s + m.in_features * plan
        prefix, _, leaf = m.name.rpartition(".")
        group = _INPUT_GROUPS.get(leaf, m.name)
        key = (prefix.rpartition(".")[0], group)
        if group not in _ALREADY_SAVED and key not in shared_inputs:
            shared_inputs.add(key)
            total += m.in_features * s
    return int(total)


def layer_activation_bytes(facts: ModelFacts, shape: StepShape) -> int:
    """Bytes per token one decoder layer keeps for backward, LoRA branches excluded."""
    s = dtype_bytes(shape.dtype)
    q = facts.num_heads * facts.head_dim
    kv = q if shape.has_mask else facts.num_kv_heads * facts.head_dim
    norms = 2 * (4 * facts.hidden_size + 4)
    attention = s * (2 * q + 2 * kv) + 4 * facts.num_heads
    mlp = 3 * s * facts.intermediate_size
    return norms + attention + mlp


def activation_bytes(facts: ModelFacts, shape: StepShape) -> int:
    """Bytes of activations alive at the end of the forward pass (before the loss's logits)."""
    s, a = dtype_bytes(shape.dtype), dtype_bytes(lora_dtype(shape.dtype))
    n, L = shape.tokens, facts.num_layers
    lora = _lora_input_bytes(facts, shape, s, a)
    layer = layer_activation_bytes(facts, shape) + lora / max(L, 1)
    if shape.checkpointing:
        kept = L * facts.hidden_size * s + 2 * layer  # layer inputs; one layer recomputed, and its gradients
    else:
        kept = L * layer
    rotary = 2 * facts.head_dim * s
    final = 4 * facts.hidden_size + s * facts.hidden_size  # final norm input, loss gradient rows
    mask = shape.batch_size * shape.seq_len * shape.seq_len if shape.has_mask else 0  # boolean
    return int(n * (kept + rotary + final) + mask)


def loss_bytes(facts: ModelFacts, shape: StepShape) -> int:
    """Transient bytes of the chunked loss: float32 logits of one chunk (and its low-precision copy);
    a LoRA-wrapped head goes through checkpointed chunks that hold about three such buffers."""
    rows = min(shape.loss_chunk, shape.tokens)
    logits = rows * facts.vocab_size * 4
    if not facts.head_fused:
        return 3 * logits
    s = dtype_bytes(shape.dtype)
    return logits + (rows * facts.vocab_size * s if s != 4 else 0)


def optimizer_states(shape: StepShape) -> int:
    """Tensors per parameter the optimizer keeps (AdamW/Adam 2; SGD/RMSprop 1, +1 with momentum)."""
    kind = OptimizerType(shape.optimizer)
    if kind in _OPTIMIZER_STATES:
        return _OPTIMIZER_STATES[kind]
    base = 1 if kind == OptimizerType.RMSPROP else 0
    return base + (1 if shape.momentum > 0 else 0)


# --- compute -----------------------------------------------------------------------------------

def _attention_flops(facts: ModelFacts, seq_len: int, packing: bool) -> float:
    """Forward FLOPs per token of the score and value products (QK^T and PV) over all layers."""
    attended = seq_len if packing else seq_len / 2  # packed rows counted whole (conservative); causal skips half
    return 4 * attended * facts.num_heads * facts.head_dim * facts.num_layers


def forward_flops_per_token(facts: ModelFacts, seq_len: int, packing: bool) -> float:
    """Forward FLOPs per token of the decoder (frozen linears, LoRA factors, attention scores)."""
    return 2 * facts.linear_macs + 2 * facts.lora_macs + _attention_flops(facts, seq_len, packing)


def step_flops(facts: ModelFacts, shape: StepShape, trained_fraction: float) -> float:
    """FLOPs of one micro-batch forward + backward with a frozen base.

    Backward through a frozen linear computes only the input gradient (as much as its forward);
    LoRA factors get input and weight gradients (twice their forward); attention's backward
    costs about twice its forward; checkpointing runs the forward twice. The head projects only
    trained positions: logits and their input gradient in the fused loss (4 H V per trained
    token), or logits, their recomputation and the input gradient for a LoRA-wrapped head (6 H V).
    """
    fwd = forward_flops_per_token(facts, shape.seq_len, shape.packing)
    bwd = 2 * facts.linear_macs + 4 * facts.lora_macs + 2 * _attention_flops(facts, shape.seq_len, shape.packing)
    per_token = fwd * (2 if shape.checkpointing else 1) + bwd
    head = (4 if facts.head_fused else 6) * facts.hidden_size * facts.vocab_size
    return shape.tokens * (per_token + trained_fraction * head)


DEQUANT_FLOPS = {"Q4_0": 150.0, "Q4_1": 250.0, "Q5_0": 300.0, "Q5_1": 330.0, "Q8_0": 75.0, "Q4_K": 240.0,
                 "Q5_K": 340.0, "Q6_K": 215.0, "F16": 30.0, "BF16": 50.0, "F32": 25.0, "int8": 40.0, "int4": 110.0}
"""Cost of dequantising one element of a compact weight (``models.quantized``), in float32 matmul
FLOPs: the time it takes at the float32 matmul rate, so it follows a faster machine's speed.
Measured on the 2-core development machine (float32 matmul about 150 GFLOP/s) dequantising a
[5632, 2048] weight into scratch, in G elements/s: F16 6, F32 6, BF16 3-7, int8 3-6, Q8_0 2,
int4 1.2-1.9, Q4_0 1.15, Q4_1 0.9, Q6_K 0.7, Q4_K 0.6, Q5_0 0.5, Q5_1 0.45, Q5_K 0.45 (noisy:
10-50% between runs). Q4_1 is fitted to the demo model's measured steps instead: its small
[1536, 576] weights dequantise at about 0.6 G/s. A step pays it per pass (``dequant_flops``)."""


def dequant_flops(facts: ModelFacts, shape: StepShape, trained_fraction: float, *, backward: bool = True) -> float:
    """Dequantisation of one micro-batch's passes over a compact base, in float32 matmul FLOPs.

    Each decoder weight is dequantised in the forward and again for the input gradient, and
    once more when checkpointing recomputes the forward. A compact LM head is read per loss
    chunk of trained rows: logits and their input gradient (a LoRA-wrapped head also recomputes
    the logits). ``backward=False``: an evaluation pass (forward only)."""
    passes = 1 + (backward * (2 if shape.checkpointing else 1))
    total = passes * sum(DEQUANT_FLOPS[kind] * n for kind, n in facts.compact_decoder)
    if facts.compact_head is not None:
        chunks = math.ceil(shape.tokens * trained_fraction / max(shape.loss_chunk, 1))
        head_passes = 1 if not backward else (2 if facts.head_fused else 3)
        kind, n = facts.compact_head
        total += chunks * head_passes * DEQUANT_FLOPS[kind] * n
    return total


def eval_flops_per_token(facts: ModelFacts, seq_len: int, packing: bool, trained_fraction: float) -> float:
    """Forward-only FLOPs per token of an evaluation pass."""
    return forward_flops_per_token(facts, seq_len, packing) + trained_fraction * 2 * facts.hidden_size * facts.vocab_size


RATES_FILE = "matmul_rates.json"
"""Best matmul rates measured on this machine, in the user cache folder (setting -> FLOP/s)."""


def _rate_key(device: str, dtype: torch.dtype, m: int, k: int, n: int) -> str:
    from senior_intern.hardware.detect import detect_cpu

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else detect_cpu().model_name
    return f"{device}|{name}|{torch.get_num_threads()} threads|torch {torch.__version__}|{dtype}|{m}x{k}x{n}"


@functools.lru_cache(maxsize=16)
def matmul_flops_per_second(device: str, dtype: torch.dtype, m: int, k: int, n: int) -> float:
    """Achieved FLOP/s of an ``[m, k] @ [k, n]`` matmul in ``dtype`` on ``device``: the best this
    machine has shown. Measured once per process (``measure_matmul``) and kept in
    ``RATES_FILE`` under the cache folder if higher than before: other work on a shared machine
    only ever lowers a reading, so the best one is the machine's own speed."""
    import json

    from senior_intern.paths import cache_dir

    measured = measure_matmul(device, dtype, m, k, n)
    path = cache_dir() / RATES_FILE
    key = _rate_key(device, dtype, m, k, n)
    try:
        rates = json.loads(path.read_text(encoding="utf-8"))
        rates = rates if isinstance(rates, dict) else {}
    except (OSError, ValueError):
        rates = {}
    best = rates.get(key)
    if isinstance(best, (int, float)) and best >= measured:
        return float(best)
    rates[key] = measured
    with contextlib.suppress(OSError):  # a read-only cache folder: the measurement still serves this process
        write_text_atomic(path, json.dumps(rates, indent=1, sort_keys=True))
    return measured


def measure_matmul(device: str, dtype: torch.dtype, m: int, k: int, n: int) -> float:
    """One measurement of the FLOP/s of an ``[m, k] @ [k, n]`` matmul: after 50 ms of warm-up
    (thread pools, clocks), the best of nine timings of several products each (about 0.25 s)."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (torch.mps.synchronize if dev.type == "mps" else (lambda: None))
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        a = torch.randn(m, k, generator=gen).to(device=dev, dtype=dtype)
        b = torch.randn(k, n, generator=gen).to(device=dev, dtype=dtype)
        out = torch.matmul(a, b)
        sync()
        reps, warm_until = 1, time.perf_counter() + 0.05
        while time.perf_counter() < warm_until:
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            sync()
            reps = max(reps, int(0.02 / max(time.perf_counter() - start, 1e-6)))
        best = math.inf
        for _ in range(9):
            start = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b, out=out)
            sync()
            best = min(best, (time.perf_counter() - start) / reps)
    return 2.0 * m * k * n / max(best, 1e-9)
