"""``FrozenLinear``: a frozen linear layer whose weight stays compact in memory.

The weight is kept as the GGUF file's own blocks (``kind`` = ``"Q4_K"``, ``"Q8_0"``, ...; the
kernels are in ``dequant.py``) or as a weight-only integer quantisation of a float base made at
load (``"int8"``: one float32 scale per output row; ``"int4"``: two values per byte, one scale
per group of ``INT4_GROUP`` inputs). It is dequantised for one layer at a time, when needed:

- forward: ``y = x W^T + b`` with ``W`` dequantised into a scratch buffer and used at once;
- backward: the input gradient ``g W`` dequantises ``W`` again instead of keeping it, so
  autograd holds nothing of the weight between the passes (``FrozenLinearFunction``).

The training paths (this module's function, the fused LoRA function, the fused MLP, the fused
loss with a compact LM head) apply the weight through ``mm_t`` (``x W^T``) and ``mm`` (``g W``):
a weight up to ``SLICE_BYTES`` in float32 is dequantised whole into ``scratch_weight``, a larger
one a slice of rows at a time into one scratch slice, so no float copy of a large weight (an
8B model's [14336, 4096] MLP weights, a 128k-row LM head) ever exists whole. Scratch buffers are
per shape, dtype and thread and are reused across calls; they are filled in row chunks of about
``CHUNK_BYTES`` on the CPU. Measured on the 1B class (a [5632, 2048] Q8_0 weight, 2 cores):
26 ms as one whole-tensor dequantisation, 8 ms in 128-row (1 MB) chunks, because the kernels'
intermediates stay in cache; and no tensor of the weight's size is allocated and freed per call,
which left glibc heap holes (about 65 MB per layer) that kept the resident memory high. The chunks
stay below ``hardware.allocator.MMAP_THRESHOLD``, so their temporaries are reused from the heap
rather than mapped and unmapped each time. A scratch weight is valid until the next use of the
same buffer on the same thread: callers use it at once and keep nothing.

It subclasses ``nn.Linear`` so that target selection, ``LoraLayer`` and everything that asks
``isinstance(m, nn.Linear)`` treat it as the linear layer it stands for; ``weight`` is a
property returning the dequantised float weight (a fresh tensor: writing into it changes
nothing; ``to_dense()`` gives an ordinary ``nn.Linear`` for merging).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from senior_intern.models import dequant

INT4_GROUP = 32
INTEGER_KINDS = ("int8", "int4")
CHUNK_BYTES = 1 << 20  # float32 bytes of weight rows dequantised at a time on the CPU
SLICE_BYTES = 16 << 20  # a weight larger than this in float32 is applied a slice of rows at a time

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
    """``F.linear(x, W, bias)`` for a compact W that dequantises again in backward instead of saving W."""

    @staticmethod
    def forward(ctx, x, bias, layer):
        """x [..., in] -> [..., out]; keeps only the layer reference for backward."""
        ctx.layer = layer
        y = layer.mm_t(x.reshape(-1, x.shape[-1]), bias)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        """Input gradient ``g W`` (W dequantised now) and, when it trains, the bias gradient."""
        need_x, need_bias, _ = ctx.needs_input_grad
        grad_x = grad_bias = None
        flat = grad_y.reshape(-1, grad_y.shape[-1])
        if need_x:
            grad_x = ctx.layer.mm(flat).view(*grad_y.shape[:-1], ctx.layer.in_features)
        if need_bias:
            grad_bias = flat.sum(0)
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
    def _decode(self, data: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        """Packed rows ``data`` (and their scales) dequantised to float32, [rows, in]."""
        if self.kind == "int8":
            return data.to(torch.float32) * scale
        if self.kind == "int4":
            rows = data.shape[0]
            q = torch.stack((data & 0x0F, data >> 4), dim=-1).reshape(rows, -1).to(torch.float32) - 8.0
            return (q.reshape(rows, -1, INT4_GROUP) * scale.unsqueeze(-1)).reshape(rows, -1)
        return dequant.dequantize(data, self.kind, self.in_features)

    def _fill(self, out: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Dequantise rows ``first : first + len(out)`` into ``out`` (any float dtype): in row
        chunks of about ``CHUNK_BYTES`` on the CPU, in one piece elsewhere."""
        step = out.shape[0]
        if out.device.type == "cpu":
            step = max(1, CHUNK_BYTES // (4 * self.in_features))
        for start in range(0, out.shape[0], step):
            rows = slice(first + start, first + min(start + step, out.shape[0]))
            scale = None if self.qscale is None else self.qscale[rows]
            out[start:start + step].copy_(self._decode(self.qdata[rows], scale))
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

    def rows_at(self, index: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows ``index`` [n] of the weight, [n, in] in ``dtype``: only those rows are dequantised."""
        scale = None if self.qscale is None else self.qscale.index_select(0, index)
        return self._decode(self.qdata.index_select(0, index), scale).to(dtype or self.compute_dtype)

    def _slices(self, dtype: torch.dtype):
        """(start, end, rows start:end dequantised in scratch) covering the weight: the whole weight
        (``scratch_weight``) up to ``SLICE_BYTES`` of float32, else slices of that size in one
        scratch buffer reused for each (a large LM head never exists whole)."""
        if self.out_features * self.in_features * 4 <= SLICE_BYTES:
            yield 0, self.out_features, self.scratch_weight(dtype)
            return
        step = max(1, SLICE_BYTES // (4 * self.in_features))
        buffer = _scratch_buffer(torch.Size((step, self.in_features)), dtype, self.qdata.device)
        for start in range(0, self.out_features, step):
            end = min(start + step, self.out_features)
            yield start, end, self._fill(buffer[:end - start], start)

    def mm_t(self, x: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x W^T (+ bias)`` for x [n, in] -> [n, out] (into ``out`` when given), the weight a
        slice at a time (``_slices``)."""
        if out is None:
            out = torch.empty(x.shape[0], self.out_features, dtype=x.dtype, device=x.device)
        for start, end, w in self._slices(x.dtype):
            if bias is None:
                torch.mm(x, w.t(), out=out[:, start:end])
            else:
                torch.addmm(bias[start:end], x, w.t(), out=out[:, start:end])
        return out

    def mm(self, g: torch.Tensor, out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
        """``g W`` for g [n, out] -> [n, in] (an input gradient), the weight a slice at a time:
        into ``out`` when given, added to what it holds with ``accumulate``."""
        for start, end, w in self._slices(g.dtype):
            part = g[:, start:end]
            if out is None:
                out = torch.mm(part, w)
            elif accumulate:
                out.addmm_(part, w)
            else:
                torch.mm(part, w, out=out)
            accumulate = True
        return out

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


class FrozenEmbedding(nn.Embedding):
    """A frozen token embedding kept in a GGUF file's blocks: a lookup dequantises only the rows
    it reads (each row of a GGUF weight is whole blocks), so a vocabulary of 50-150k rows costs
    the file's bytes, not 4 bytes per value. ``as_head()`` gives the tied LM head over the same
    blocks, which the chunked loss applies a slice of rows at a time (``FrozenLinear.mm_t``).
    ``weight`` is the dequantised table, made on each read (``to_dense()`` for an ordinary one).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, kind: str, data: torch.Tensor,
                 dtype: torch.dtype = torch.float32, padding_idx: int | None = None) -> None:
        nn.Module.__init__(self)
        dequant.check_supported(kind)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, None, 2.0
        self.scale_grad_by_freq = self.sparse = False
        self.kind = kind
        self.compute_dtype = dtype
        self.register_buffer("qdata", data)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [...] -> [..., embedding_dim] in the compute dtype."""
        rows = dequant.dequantize(self.qdata.index_select(0, ids.reshape(-1)), self.kind, self.embedding_dim)
        return rows.to(self.compute_dtype).view(*ids.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The dequantised table [num_embeddings, embedding_dim] (a new tensor each time)."""
        return self.as_head().dequantized()

    @property
    def nbytes(self) -> int:
        """Bytes of the compact table."""
        return self.qdata.numel() * self.qdata.element_size()

    def as_head(self) -> FrozenLinear:
        """The tied LM head: a ``FrozenLinear`` [vocab, hidden] over the same blocks (no copy)."""
        return FrozenLinear(self.embedding_dim, self.num_embeddings, self.kind, self.qdata, dtype=self.compute_dtype)

    def to_dense(self) -> nn.Embedding:
        """An ordinary frozen ``nn.Embedding`` holding the dequantised table."""
        dense = nn.Embedding(self.num_embeddings, self.embedding_dim, self.padding_idx, device="meta",
                             dtype=self.compute_dtype)
        dense.weight = nn.Parameter(self.weight, requires_grad=False)
        return dense

    def extra_repr(self) -> str:
        """Shape and how the table is held, shown in ``print(model)``."""
        return f"{self.num_embeddings}, {self.embedding_dim}, kind={self.kind}"


def compact_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the compact linear weights, bytes of every other parameter and buffer) of ``model``."""
    compact = other = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, (FrozenLinear, FrozenEmbedding)):
            shared = id(module.qdata) in seen  # a tied head over the embedding's blocks
            compact += 0 if shared else module.nbytes
            seen.update(id(t) for t in (module.qdata, getattr(module, "qscale", None), getattr(module, "bias", None))
                        if t is not None)
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
