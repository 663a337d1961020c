"""Numeric precision of a run: float16 loss scaling and the float32 matmul precision on CUDA.

float16 (what ``auto`` picks on pre-Ampere NVIDIA GPUs and older macOS, see
``hardware.detect.recommended_dtype``) has 5 exponent bits: gradients below ~6e-8 flush to zero
and values above 65504 overflow. ``LossScaler`` multiplies the loss by a large factor before
backward (so small gradients survive the float16 activations), divides the float32 LoRA
gradients by it again before clipping (``unscale``), skips the optimizer step when the scaled
gradients overflowed, and adapts the factor (halved after an overflow, doubled after 2000 good
steps): ``torch.amp.GradScaler``'s rules. For other dtypes it is a pass-through. Its state goes
into every checkpoint (``state_dict``) so a resumed run continues with the same factor.

``configure_matmul_precision`` turns on TF32 tensor cores for float32 matmuls on CUDA GPUs of
compute capability 8.0+ (Ampere, Hopper): ``torch.set_float32_matmul_precision("high")``, about
10 mantissa bits in the products, sums still in float32; several times faster there.
"""

from __future__ import annotations

from typing import Any

import torch

GROWTH_INTERVAL = 2000  # good steps before the factor doubles (GradScaler's default)
INIT_SCALE = 2.0 ** 16


class LossScaler:
    """Dynamic loss scaling for a float16 run; a pass-through for any other ``dtype``.

    Use per optimizer step: ``backward(scale(loss))`` for each micro-batch, then ``unscale(opt)``
    before clipping, then ``step(opt)`` when the gradients are finite, and ``update()`` always.
    ``overflow_steps`` counts the steps skipped for an overflow since the scaler was made.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device | str, init_scale: float = INIT_SCALE,
                 growth_interval: int = GROWTH_INTERVAL) -> None:
        self.enabled = dtype == torch.float16
        device = torch.device(device)
        self._scaler = torch.amp.GradScaler(device.type, init_scale=init_scale, growth_interval=growth_interval,
                                            enabled=self.enabled) if self.enabled else None
        self._found_inf = False
        self.overflow_steps = 0

    @property
    def scale_value(self) -> float:
        """The current loss scale (1.0 when disabled)."""
        return float(self._scaler.get_scale()) if self._scaler is not None else 1.0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the current scale (unchanged when disabled)."""
        return self._scaler.scale(loss) if self._scaler is not None else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide the gradients by the scale in place; True when any of them was inf/NaN.

        Call once per step, before clipping (the clip threshold is for the true gradients).
        Disabled: returns False without touching anything.
        """
        if self._scaler is None:
            return False
        self._scaler.unscale_(optimizer)
        state = self._scaler._per_optimizer_states[id(optimizer)]
        self._found_inf = any(bool(v.item()) for v in state["found_inf_per_device"].values())
        return self._found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` for a step whose unscaled gradients are finite."""
        if self._scaler is None:
            optimizer.step()
        else:
            self._scaler.step(optimizer)

    def overflowed(self) -> bool:
        """True when this step's ``unscale`` found inf/NaN gradients: a scale too large for
        float16, not a diverged run. The step is skipped, ``update`` halves the scale."""
        return self._found_inf

    def update(self) -> None:
        """End the step: adapt the scale (halve after an overflow, double after
        ``GROWTH_INTERVAL`` good steps) and count an overflow. Call after every step, skipped or not."""
        if self._scaler is not None:
            if self._found_inf:
                self.overflow_steps += 1
            if self._scaler._per_optimizer_states:  # unscale ran this step
                self._scaler.update()
        self._found_inf = False

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values (safe for ``torch.load(weights_only=True)``); {} when disabled."""
        if self._scaler is None:
            return {}
        state = dict(self._scaler.state_dict())
        state["overflow_steps"] = self.overflow_steps
        return state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore ``state_dict()``; an empty or missing state (a non-float16 checkpoint) keeps the defaults."""
        if self._scaler is None or not state:
            return
        state = dict(state)
        self.overflow_steps = int(state.pop("overflow_steps", 0))
        self._scaler.load_state_dict(state)

    def describe(self) -> str:
        """One line for the run log."""
        if self._scaler is None:
            return "no loss scaling"
        return f"float16 loss scaling (initial scale {self.scale_value:g}, halved on overflow)"


def configure_matmul_precision(device: torch.device | str, dtype: torch.dtype) -> str:
    """Set the float32 matmul precision for a run on ``device`` in ``dtype``; returns what was chosen.

    float32 on a CUDA GPU of compute capability 8.0+ (and not ROCm): "high" (TF32 tensor cores).
    Everything else: "highest" (exact float32 products), torch's default. The setting is
    process-wide, so every run sets it afresh.
    """
    device = torch.device(device)
    choice = "highest"
    if device.type == "cuda" and dtype == torch.float32 and not torch.version.hip:
        index = torch.cuda.current_device() if device.index is None else device.index
        if tuple(torch.cuda.get_device_capability(index)) >= (8, 0):
            choice = "high"
    torch.set_float32_matmul_precision(choice)
    return choice


def describe_matmul_precision(choice: str) -> str:
    """The log line for ``configure_matmul_precision``'s answer."""
    if choice == "high":
        return "float32 matmuls use TF32 tensor cores (set_float32_matmul_precision('high'))"
    return "float32 matmuls at full float32 precision"

