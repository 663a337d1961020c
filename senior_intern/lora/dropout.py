"""Exact, fast dropout masks for the LoRA input.

The LoRA path uses the same dropout as PEFT's ``nn.Dropout``: every element of the LoRA input
is kept independently with probability ``1 - p`` and the kept values are scaled by
``1 / (1 - p)``. The layer folds that scale into the rank-r intermediate, so all it needs from
here is a 0/1 *keep* mask to multiply the input by.

Why not ``torch.nn.functional.dropout``: on the CPU the random numbers come from one
single-threaded generator (``bernoulli_`` and ``rand`` draw 32 bits per element), and for a
[2048, 576] input the mask costs far more than the rank-16 matmuls it feeds. Besides, boolean
comparisons on the CPU are not vectorised in torch 2.13 (``uint8 > k`` runs ~15x slower than
``uint8 - k``), and ``float * bool`` is ~3x slower than ``float * uint8``. Measured here (AMD
EPYC with AVX-512, torch 2.13, 1 thread, best of 100 interleaved runs, [2048, 576] float32,
p = 0.05; a shared machine, so +-20%):

==================================================  ========
``F.dropout(x, p, training=True)``                   6.6 ms
``torch.empty(bool).bernoulli_(1 - p)`` (mask)       6.0 ms
``torch.rand(shape) >= p`` (mask)                    4.2 ms
random bytes, ``byte > k``, ``nonzero(byte == k)``   2.3 ms
``keep_mask`` (mask)                                 1.1 - 1.5 ms
``x * mask``: bool mask / uint8 mask                 1.1 ms / 0.38 ms
``x * keep_mask(x, p)`` (what the layer does)        1.7 ms
==================================================  ========

How ``keep_mask`` works on the CPU: draw 64-bit random words (``random_`` over the full int64
range costs about as much per word as one float does per element) and give each element one
uniform byte ``b`` of them. With ``q = 256 p``, ``k = floor(q)`` and ``f = q - k`` an element
is dropped when ``b < k``, kept when ``b > k``, and on a tie (``b == k``, probability 1/256) it
is dropped with probability ``f`` using a fresh uniform float. So P(drop) = k/256 + f/256 = p,
exact to within 2**-32 (the tie-break float has 24 random bits; torch's own float32 uniforms
resolve only 2**-24), and no two elements, calls or modules share a draw. ``b > k`` is computed as
``clamp(b, k, k + 1) - k`` (vectorised uint8 arithmetic); the words holding a tie are found with
the SWAR zero-byte test on ``word XOR kkkkkkkk`` (int64 arithmetic over n/8 words), so only
~3% of the words are examined byte by byte.

On other devices (CUDA, MPS) random numbers are generated in parallel and comparisons are fast,
so the mask is a plain ``rand >= p``.
"""

from __future__ import annotations

import torch

_FULL_INT64_LOW = -(2**63)
_ONES = 0x0101010101010101  # 0x01 in every byte
_HIGH_BITS = -0x7F7F7F7F7F7F7F80  # 0x8080808080808080 as a signed int64


def keep_mask(like: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 0/1 mask shaped like ``like``; each element is 1 (kept) independently with probability 1 - p.

    ``like``: any tensor (only its shape and device are used). ``p``: drop probability in [0, 1).
    ``generator``: optional ``torch.Generator`` on the tensor's device (default: the global one).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if like.device.type == "cpu":
        return _cpu_keep_mask(like.shape, p, generator)
    return (torch.rand(like.shape, device=like.device, generator=generator) >= p).to(torch.uint8)


def _signed64(value: int) -> int:
    """An unsigned 64-bit pattern as the int64 with the same bits."""
    return value - 2**64 if value >= 2**63 else value


def _cpu_keep_mask(shape: torch.Size, p: float, generator: torch.Generator | None) -> torch.Tensor:
    n = shape.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.int64)
    words.random_(_FULL_INT64_LOW, None, generator=generator)  # 64 uniform bits per word
    scaled = p * 256.0
    k = int(scaled)  # drop every byte below k
    frac = scaled - k  # ... and a byte equal to k with probability frac
    tie_words = None
    if frac > 0.0:
        xored = words ^ _signed64(k * _ONES)  # a byte equal to k becomes a zero byte
        tie_words = ((xored - _ONES) & ~xored & _HIGH_BITS).nonzero().squeeze(1)  # words with a zero byte
        tie_bytes = words[tie_words].view(torch.uint8).view(-1, 8)  # copy before the clamp below
    keep = words.view(torch.uint8)
    low = k if frac > 0.0 else k - 1  # keep = (byte > low)
    if low < 0:  # p == 0: keep everything
        keep.fill_(1)
    elif low == 255:  # only ties can be kept
        keep.zero_()
    else:
        # 0/1 via clamp and subtract: vectorised, unlike a bool comparison
        keep.clamp_(low, low + 1).sub_(low)
    if tie_words is not None and tie_words.numel():
        row, col = (tie_bytes == k).nonzero(as_tuple=True)
        position = tie_words[row] * 8 + col
        kept = torch.rand(position.numel(), generator=generator) >= frac
        keep[position[kept]] = 1
    return keep[:n].view(shape)
