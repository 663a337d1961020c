"""``FrozenLinear``: a frozen linear layer whose weight stays compact in memory.

The weight is kept as the GGUF file's own blocks (``kind`` = ``"Q4_K"``, ``"Q8_0"``, ...; the
kernels are in ``dequant.py``) or as a weight-only integer quantisation of a float base made at
load (``"int8"``: one float32 scale per output row; ``"int4"``: two values per byte, one scale
per group of ``INT4_GROUP`` inputs). It is dequantised for one layer at a time, when needed:

- forward: ``y = x W^T + b`` with ``W`` dequantised into a scratch buffer and used at once;
- backward: the input gradient ``g W`` dequantises ``W`` again instead of keeping it, so
  autograd holds nothing of the weight between the passes (``FrozenLinearFunction``).

The training paths (this module's function, the fused LoRA function, the fused MLP) take the
weight from ``scratch_weight``: one buffer per weight shape and dtype and per thread, filled in
row chunks of about ``CHUNK_BYTES`` on the CPU. Measured on the 1B class (a [5632, 2048] Q8_0
weight, 2 cores): 28 ms as one whole-tensor dequantisation, 8 ms in 512-row chunks, because the
kernels' intermediates stay in cache; and no tensor of the weight's size is allocated and freed
per call, which left glibc heap holes (about 65 MB per layer) that kept the resident memory high.
A scratch weight is valid until the next ``scratch_weight`` call of the same shape and dtype on
the same thread: callers use it at once and keep nothing.

It subclasses ``nn.Linear`` so that target selection, ``LoraLayer`` and everything that asks
``isinstance(m, nn.Linear)`` treat it as the linear layer it stands for; ``weight`` is a
property returning the dequantised float weight (a fresh tensor: writing into it changes
nothing; ``to_dense()`` gives an ordinary ``nn.Linear`` for merging).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from senior_intern.models import dequant

INT4_GROUP = 32
INTEGER_KINDS = ("int8", "int4")
CHUNK_BYTES = 4 << 20  # float32 bytes of weight rows dequantised at a time on the CPU

_scratch = threading.local()


def _scratch_buffer(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """This thread's reusable buffer of ``shape``, ``dtype`` and ``device`` (made on first use)."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    key = (tuple(shape), dtype, device)
    buffer = buffers.get(key)
    if buffer is None:
        buffer = buffers[key] = torch.empty(shape, dtype=dtype, device=device)
    return buffer


def release_scratch() -> None:
    """Free this thread's scratch weights (they are also freed when the thread ends)."""
    _scratch.buffers = {}


class FrozenLinearFunction(torch.autograd.Function):
    """``F.linear(x, layer.dequantized(), bias)`` that dequantises again in backward instead of saving W."""

    @staticmethod
    def forward(ctx, x, bias, layer):
        """x [..., in] -> [..., out]; keeps only the layer reference for backward."""
        ctx.layer = layer
        return F.linear(x, layer.scratch_weight(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_y):
        """Input gradient ``g W`` (W dequantised now) and, when it trains, the bias gradient."""
        need_x, need_bias, _ = ctx.needs_input_grad
        grad_x = grad_bias = None
        if need_x:
            grad_x = torch.matmul(grad_y, ctx.layer.scratch_weight(grad_y.dtype))
        if need_bias:
            grad_bias = grad_y.reshape(-1, grad_y.shape[-1]).sum(0)
        return grad_x, grad_bias, None


class FrozenLinear(nn.Linear):
    """A compact frozen ``[out, in]`` weight (plus an optional float bias), see the module docstring.

    ``kind``: a GGUF type name from ``dequant.SUPPORTED`` or one of ``INTEGER_KINDS``.
    ``data``: the packed weight (uint8 GGUF rows [out, row_bytes]; int8 [out, in]; int4 uint8
    [out, in / 2]). ``scales``: float32 scales for the integer kinds (None for GGUF).
    ``dtype``: the dtype the weight is dequantised to (the model's compute dtype).
    """

    def __init__(self, in_features: int, out_features: int, kind: str, data: torch.Tensor,
                 scales: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        nn.Module.__init__(self)
        if kind not in INTEGER_KINDS:
            dequant.check_supported(kind)
        self.in_features = in_features
        self.out_features = out_features
        self.kind = kind
        self.compute_dtype = dtype
        self.register_buffer("qdata", data)
        self.register_buffer("qscale", scales)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.to(dtype), requires_grad=False)

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def quantize(cls, linear: nn.Linear, kind: str) -> "FrozenLinear":
        """Weight-only ``int8`` (per output row) or ``int4`` (per group of 32 inputs, symmetric)
        quantisation of a float ``nn.Linear``; an int4 layer whose inputs are not a multiple of
        the group is kept as int8."""
        if kind not in INTEGER_KINDS:
            raise ValueError(f"unknown base quantization {kind!r}; use one of {', '.join(INTEGER_KINDS)}")
        w = linear.weight.detach().to(torch.float32)
        bias = None if linear.bias is None else linear.bias.detach()
        out_features, in_features = w.shape
        if kind == "int4" and in_features % INT4_GROUP == 0:
            groups = w.reshape(out_features, in_features // INT4_GROUP, INT4_GROUP)
            scale = groups.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 7.0
            q = torch.round(groups / scale).clamp_(-8, 7).to(torch.int16) + 8  # 0..15
            q = q.reshape(out_features, in_features).to(torch.uint8)
            packed = q[:, 0::2] | (q[:, 1::2] << 4)
            return cls(in_features, out_features, "int4", packed.contiguous(), scale.squeeze(-1).contiguous(),
                       bias, linear.weight.dtype)
        scale = w.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale).clamp_(-127, 127).to(torch.int8)
        return cls(in_features, out_features, "int8", q, scale, bias, linear.weight.dtype)

    # --- the weight ----------------------------------------------------------------------------
    def _rows(self, start: int, end: int) -> torch.Tensor:
        """Rows ``start:end`` of the weight dequantised to float32, [end - start, in]."""
        data = self.qdata[start:end]
        if self.kind == "int8":
            return data.to(torch.float32) * self.qscale[start:end]
        if self.kind == "int4":
            rows = end - start
            q = torch.stack((data & 0x0F, data >> 4), dim=-1).reshape(rows, -1).to(torch.float32) - 8.0
            scale = self.qscale[start:end].unsqueeze(-1)
            return (q.reshape(rows, -1, INT4_GROUP) * scale).reshape(rows, -1)
        return dequant.dequantize(data, self.kind, self.in_features)

    def _fill(self, out: torch.Tensor) -> torch.Tensor:
        """Dequantise the whole weight into ``out`` [out, in] (any float dtype): in row chunks of
        about ``CHUNK_BYTES`` on the CPU, in one piece elsewhere."""
        step = self.out_features
        if out.device.type == "cpu":
            step = max(1, CHUNK_BYTES // (4 * self.in_features))
        for start in range(0, self.out_features, step):
            end = min(start + step, self.out_features)
            out[start:end].copy_(self._rows(start, end))
        return out

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight [out, in] in ``dtype`` (default: the compute dtype), a new tensor."""
        out = torch.empty(self.out_features, self.in_features, dtype=dtype or self.compute_dtype,
                          device=self.qdata.device)
        return self._fill(out)

    def scratch_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight in this thread's scratch buffer for its shape and ``dtype``: valid
        until the next ``scratch_weight`` of that shape and dtype here (use it at once)."""
        shape = torch.Size((self.out_features, self.in_features))
        return self._fill(_scratch_buffer(shape, dtype or self.compute_dtype, self.qdata.device))

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The dequantised weight (a new tensor each time; it does not require grad)."""
        return self.dequantized()

    @property
    def nbytes(self) -> int:
        """Bytes the compact weight (and its scales and bias) take in memory."""
        total = self.qdata.numel() * self.qdata.element_size()
        for t in (self.qscale, self.bias):
            if t is not None:
                total += t.numel() * t.element_size()
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out] through ``FrozenLinearFunction``."""
        return FrozenLinearFunction.apply(x, self.bias, self)

    def to_dense(self) -> nn.Linear:
        """An ordinary frozen ``nn.Linear`` holding the dequantised weight (for merging)."""
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device="meta", dtype=self.compute_dtype)
        dense.weight = nn.Parameter(self.dequantized(), requires_grad=False)
        if self.bias is not None:
            dense.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=self.bias.requires_grad)
        return dense

    def extra_repr(self) -> str:
        """Shape and how the weight is held, shown in ``print(model)``."""
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, bias={self.bias is not None}"


def compact_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the compact linear weights, bytes of every other parameter and buffer) of ``model``."""
    compact = other = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, FrozenLinear):
            compact += module.nbytes
            seen.update(id(t) for t in (module.qdata, module.qscale, module.bias) if t is not None)
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            other += t.numel() * t.element_size()
    return compact, other


def quantize_linears(model: nn.Module, kind: str, skip: set[str] | None = None) -> int:
    """Replace every ``nn.Linear`` of ``model`` (except names in ``skip``, and weights shared with
    another module) by a ``FrozenLinear`` of ``kind``; returns how many were replaced."""
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    names = [n for n, m in model.named_modules()
             if type(m) is nn.Linear and n not in (skip or set()) and owners.get(id(m.weight), 0) == 1]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FrozenLinear.quantize(getattr(parent, child), kind))
    return len(names)
