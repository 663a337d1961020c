"""Exact, fast dropout for the LoRA input: drop *positions* on the CPU, keep masks elsewhere.

The LoRA path uses the same dropout as PEFT's ``nn.Dropout``: every element of the LoRA input
is dropped independently with probability ``p`` and the kept values are scaled by
``1 / (1 - p)``. The layer folds that scale into the rank-r intermediate, so all it needs from
here is which elements to zero: a ``DropPlan``.

On the CPU the random numbers come from one single-threaded generator, so drawing one random
number per element (``F.dropout``, ``bernoulli_``, ``rand``) costs more than the rank-16
matmuls the mask feeds. A Bernoulli(p) sequence is equally well described by the gaps between
its dropped elements, which are independent Geometric(p) variables (P(gap = k) = (1-p)^(k-1) p,
k >= 1). ``drop_positions`` draws those gaps with ``geometric_`` (a float64 uniform per gap,
``ceil(log u / log(1 - p))``) and sums them: about ``p * n`` draws instead of ``n``, exact to
float64 rounding, independent across elements, calls and modules. The plan keeps the sorted
flat positions (int64, ``8 p n`` bytes: 0.4 bytes per element at p = 0.05, against 1 byte for a
uint8 mask and 4 for PEFT's float mask) and zeroes them with one ``index_fill_``.

Measured on this project's 2-core AMD EPYC (torch 2.13, 1 thread, busy shared machine, medians
of interleaved runs, [2048, 576] float32, p = 0.05):

==================================================  ========
``torch.empty(bool).bernoulli_(1 - p)`` (mask)      16.4 ms
``torch.rand(shape) >= p`` (mask)                    7.6 ms
``keep_mask`` (random bytes with exact tie-break)    7.1 ms
``drop_positions`` (geometric gaps)                  1.3 ms
``x.clone()`` + ``index_fill_`` at the positions     0.2 ms
==================================================  ========

``keep_mask`` remains for callers that want a dense 0/1 mask. On other devices (CUDA, MPS)
random numbers are generated in parallel and a data-dependent position count would force a
synchronisation, so the plan there is a dense ``rand >= p`` mask.
"""

from __future__ import annotations

import math

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


def drop_positions(numel: int, p: float, generator: torch.Generator | None = None, *,
                   draws: int | None = None) -> torch.Tensor:
    """Sorted flat indices (int64, CPU) of the elements a dropout of rate ``p`` drops from ``numel``.

    Each index in ``[0, numel)`` is present independently with probability ``p`` (see the module
    docstring: the gaps between dropped elements are drawn as Geometric(p)). ``p`` in [0, 1).
    ``draws``: gaps drawn per round (default: the expected count plus six standard deviations,
    so a second round is almost never needed); rounds continue until the gaps pass ``numel``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0 or numel == 0:
        return torch.empty(0, dtype=torch.int64)
    expected = numel * p
    chunk = draws or int(expected + 6.0 * math.sqrt(expected) + 16)
    parts, end = [], 0
    while end < numel:
        gaps = torch.empty(chunk, dtype=torch.int64).geometric_(p, generator=generator)
        gaps[0] += end - 1  # so the running sum gives 0-based positions after the previous round
        positions = gaps.cumsum_(0)
        last = int(positions[-1])
        if last < end + chunk - 1:  # a gap of u == 0 (probability 2**-53) came out as INT64_MIN: redraw
            continue
        parts.append(positions)
        end = last + 1
    positions = parts[0] if len(parts) == 1 else torch.cat(parts)
    return positions[: int(torch.searchsorted(positions, numel))]


class DropPlan:
    """Which elements of one LoRA input a dropout drops; applied to the input and to its gradient.

    Build with ``DropPlan.draw(shape, p, device)``. On the CPU it holds sorted flat positions
    (``positions``, int64); elsewhere a dense uint8 keep mask (``mask``, shaped like the input).
    ``apply(x)`` returns a copy of ``x`` with the dropped elements zeroed; ``apply_(t)`` zeroes
    them in ``t`` in place (``t`` contiguous, shaped like the input).
    """

    __slots__ = ("positions", "mask")

    def __init__(self, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        if (positions is None) == (mask is None):
            raise ValueError("DropPlan needs exactly one of positions and mask")
        self.positions = positions
        self.mask = mask

    @classmethod
    def draw(cls, shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu",
             generator: torch.Generator | None = None) -> "DropPlan":
        """A fresh plan for an input of ``shape`` on ``device``; each element dropped with probability ``p``."""
        device = torch.device(device)
        if device.type == "cpu":
            return cls(positions=drop_positions(math.prod(shape), p, generator))
        return cls(mask=(torch.rand(shape, device=device, generator=generator) >= p).to(torch.uint8))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x with the dropped elements set to 0 (a new tensor; ``x`` is not changed)."""
        if self.mask is not None:
            return x * self.mask.view(x.shape)
        return self.apply_(x.clone(memory_format=torch.contiguous_format))

    def apply_(self, t: torch.Tensor) -> torch.Tensor:
        """Zero the dropped elements of the contiguous tensor ``t`` in place and return it."""
        if self.mask is not None:
            return t.mul_(self.mask.view(t.shape))
        t.view(-1).index_fill_(0, self.positions, 0.0)
        return t

    @property
    def tensor(self) -> torch.Tensor:
        """What the plan holds: the positions (CPU) or the mask (other devices)."""
        return self.positions if self.positions is not None else self.mask

    @classmethod
    def of(cls, tensor: torch.Tensor) -> "DropPlan":
        """The plan whose ``tensor`` is ``tensor`` (int64 positions, or a uint8 mask)."""
        return cls(positions=tensor) if tensor.dtype == torch.int64 else cls(mask=tensor)

    @property
    def nbytes(self) -> int:
        """Memory the plan holds."""
        held = self.positions if self.positions is not None else self.mask
        return held.numel() * held.element_size()
