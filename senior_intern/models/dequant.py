"""Vectorised torch dequantisation of GGUF (ggml) weight blocks.

Each function takes the raw bytes of a tensor as a ``uint8`` tensor ``[rows, row_bytes]`` (one
row of the weight per row, the layout a GGUF file stores) and returns ``[rows, elements]`` in
float32. The arithmetic is the one the ``gguf`` package's numpy reference performs
(``gguf.quants.dequantize``): integer unpacking, then float32 products in the same order, so
the results are bitwise equal (tests: ``tests/models/test_dequant.py``).

Block layouts (bytes per block, elements per block):

- F32 (4, 1), F16 (2, 1), BF16 (2, 1): plain values.
- Q8_0 (34, 32): f16 scale ``d``, 32 int8 ``q``: ``d * q``.
- Q4_0 (18, 32): ``d``, 16 bytes of nibbles (low nibbles are elements 0..15): ``d * (q - 8)``.
- Q4_1 (20, 32): ``d``, f16 minimum ``m``, nibbles: ``d * q + m``.
- Q5_0 (22, 32) / Q5_1 (24, 32): like Q4_0 / Q4_1 with a 32-bit word of fifth bits
  (bit j for element j); Q5_0 subtracts 16.
- Q4_K (144, 256): f16 ``d`` and ``dmin``, 12 bytes of 6-bit scales and minima for 8 sub-blocks
  of 32, 128 bytes of nibbles (each 32 bytes: low nibbles one sub-block, high the next):
  ``d * sc * q - dmin * m``.
- Q5_K (176, 256): Q4_K plus 32 bytes of fifth bits (bit s of byte l for sub-block s).
- Q6_K (210, 256): 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales (one per
  16 elements), f16 ``d``: ``d * sc * (q - 32)``.

Other types raise ``UnsupportedQuantization`` naming the type.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

QK_K = 256


class UnsupportedQuantization(ValueError):
    """A GGUF tensor type that cannot be kept compact (the message names the type)."""


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The f16 at byte ``start`` of every block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).to(torch.float32)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n, k] bytes -> [n, 2k]: the low nibbles of all k bytes, then the high nibbles."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b, 0)
    q = b[:, 2:].contiguous().view(torch.int8).to(torch.float32)
    return d * q


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b, 0)
    q = _nibbles(b[:, 2:]).to(torch.int8) - 8
    return d * q.to(torch.float32)


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b, 0), _f16(b, 2)
    q = _nibbles(b[:, 4:]).to(torch.float32)
    return d * q + m


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """4 bytes per block (a little-endian uint32) -> [n, 32] bits, bit j for element j."""
    word = qh.to(torch.int64)
    word = word[:, 0] | (word[:, 1] << 8) | (word[:, 2] << 16) | (word[:, 3] << 24)
    shifts = torch.arange(32, dtype=torch.int64, device=qh.device)
    return ((word[:, None] >> shifts) & 1).to(torch.uint8)


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b, 0)
    q = (_nibbles(b[:, 6:]) | (_fifth_bits(b[:, 2:6]) << 4)).to(torch.int8) - 16
    return d * q.to(torch.float32)


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b, 0), _f16(b, 2)
    q = (_nibbles(b[:, 8:]) | (_fifth_bits(b[:, 4:8]) << 4)).to(torch.float32)
    return d * q + m


def _k_scales(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """12 bytes per super-block -> 8 six-bit scales and 8 six-bit minima, each [n, 8]."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    mn = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return sc, mn


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> [n, 8, 32]: for each 32-byte chunk its low nibbles, then its high ones."""
    chunks = qs.reshape(-1, 4, 1, 32)
    shifts = torch.tensor([0, 4], dtype=torch.uint8, device=qs.device).reshape(1, 1, 2, 1)
    return ((chunks >> shifts) & 0x0F).reshape(-1, 8, 32)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k_scales(b[:, 4:16])
    scale = (d * sc.to(torch.float32)).unsqueeze(-1)
    low = (dmin * mn.to(torch.float32)).unsqueeze(-1)
    q = _k_nibbles(b[:, 16:144]).to(torch.float32)
    return (scale * q - low).reshape(-1, QK_K)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k_scales(b[:, 4:16])
    scale = (d * sc.to(torch.float32)).unsqueeze(-1)
    low = (dmin * mn.to(torch.float32)).unsqueeze(-1)
    qh = b[:, 16:48].reshape(-1, 1, 32)
    shifts = torch.arange(8, dtype=torch.uint8, device=b.device).reshape(1, 8, 1)
    high = (qh >> shifts) & 1
    q = (_k_nibbles(b[:, 48:176]) | (high << 4)).to(torch.float32)
    return (scale * q - low).reshape(-1, QK_K)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    ql, qh = b[:, 0:128], b[:, 128:192]
    sc = b[:, 192:208].contiguous().view(torch.int8).to(torch.float32)
    d = _f16(b, 208)
    scale = (d * sc).reshape(-1, 16, 1)
    lo = ql.reshape(-1, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8, device=b.device).reshape(1, 1, 2, 1)
    lo = (lo & 0x0F).reshape(-1, 8, 32)
    hi = qh.reshape(-1, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device).reshape(1, 1, 4, 1)
    hi = (hi & 0x03).reshape(-1, 8, 32)
    q = ((lo | (hi << 4)).to(torch.int8) - 32).reshape(-1, 16, 16).to(torch.float32)
    return (scale * q).reshape(-1, QK_K)


def _plain(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    def convert(b: torch.Tensor) -> torch.Tensor:
        return b.contiguous().view(dtype).to(torch.float32)
    return convert


# name: (bytes per block, elements per block, kernel)
KERNELS: dict[str, tuple[int, int, Callable[[torch.Tensor], torch.Tensor]]] = {
    "F32": (4, 1, _plain(torch.float32)),
    "F16": (2, 1, _plain(torch.float16)),
    "BF16": (2, 1, _plain(torch.bfloat16)),
    "Q8_0": (34, 32, _q8_0),
    "Q4_0": (18, 32, _q4_0),
    "Q4_1": (20, 32, _q4_1),
    "Q5_0": (22, 32, _q5_0),
    "Q5_1": (24, 32, _q5_1),
    "Q4_K": (144, QK_K, _q4_k),
    "Q5_K": (176, QK_K, _q5_k),
    "Q6_K": (210, QK_K, _q6_k),
}
SUPPORTED = tuple(KERNELS)


def check_supported(type_name: str, where: str = "") -> None:
    """Raise ``UnsupportedQuantization`` unless ``type_name`` (e.g. ``"Q4_K"``) has a kernel."""
    if type_name not in KERNELS:
        at = f"{where}: " if where else ""
        raise UnsupportedQuantization(
            f"{at}GGUF tensor type {type_name} cannot be kept compact (supported: {', '.join(SUPPORTED)}); "
            "requantize the file to Q8_0, Q6_K, Q5_K or Q4_K with llama-quantize, or use the Hugging Face folder"
        )


def row_bytes(type_name: str, elements: int) -> int:
    """Bytes one row of ``elements`` values takes in ``type_name``."""
    check_supported(type_name)
    block_bytes, block_elements, _ = KERNELS[type_name]
    if elements % block_elements:
        raise ValueError(f"a row of {elements} values is not a whole number of {type_name} blocks ({block_elements})")
    return elements // block_elements * block_bytes


def dequantize(data: torch.Tensor, type_name: str, elements: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``data`` uint8 [rows, row_bytes] of ``type_name`` -> [rows, elements] in ``dtype``."""
    check_supported(type_name)
    block_bytes, _, kernel = KERNELS[type_name]
    rows = data.shape[0]
    values = kernel(data.reshape(-1, block_bytes)).reshape(rows, elements)
    return values if dtype == torch.float32 else values.to(dtype)
