"""The gated MLP of Llama-family models as one autograd function during LoRA training.

    y = down(silu(gate(x)) * up(x))        gate, up: [N, H] -> [N, I]; down: [N, I] -> [N, H]

where each projection is a frozen linear layer, with or without a LoRA adapter
(``functional.project``). Autograd would keep, per MLP, ``gate(x)``, ``silu(gate(x))``, ``up(x)``,
their product and a dropped copy of every LoRA input. ``SwiGluFunction`` keeps ``x``, ``gate(x)``
and ``up(x)`` (plus the drop plans and the rank-r intermediates) and recomputes
``silu(gate(x)) * up(x)`` in backward: two [N, I] elementwise passes instead of two stored
[N, I] tensors (on the demo model 25 MB per layer at batch 4 x 512).

``fuse_mlps(model)`` routes every matching module (children ``gate_proj``, ``up_proj``,
``down_proj``) through the function, after checking on a small random input that the module's
own ``forward`` computes exactly ``down(silu(gate(x)) * up(x))``; a module that computes
anything else is left alone. The check runs once per kind of module (class, activation, kinds
of projection), not per layer: on a compact base each check dequantises the MLP's weights
three times (on the 8B class, 32 layers of [14336, 4096] Q4_K; with this and the compact
embedding, its time to the first step fell from 240 s to 14 s). ``unfuse_mlps(model)`` undoes
it. Drop plans are drawn in the order gate, up, down, as the unfused module would, so a fused
and an unfused run see the same masks.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from senior_intern.lora.functional import (
    LoraSpec, as_dtype, in_compute_dtype, project, project_backward, saved_weight, stash_plan, unstash_plan,
)
from senior_intern.lora.layer import LoraLayer
from senior_intern.models.quantized import FrozenLinear

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_CHECK_ROWS = 3


def _parts(module: nn.Module, x: torch.Tensor, shape: torch.Size) -> tuple[list, LoraSpec | None] | None:
    """(weight, bias, a, b, lora_bias) and the spec of one projection for an input of ``shape``,
    or None when it cannot run inside the fused function."""
    if isinstance(module, LoraLayer):
        if module.merged or module.disabled:
            module = module.base_layer
        elif not module.fused_ok(x):
            return None
        else:
            spec = module.lora_spec(shape, x.device)
            base = module.base_layer
            weight = base if isinstance(base, FrozenLinear) else base.weight
            return [weight, base.bias, module.lora_A.weight, module.lora_B.weight, module.lora_B.bias], spec
    if isinstance(module, FrozenLinear):  # compact: dequantised inside the function
        return ([module, module.bias, None, None, None], None) if module.compute_dtype == x.dtype else None
    if type(module) is not nn.Linear or module.weight.requires_grad or module.weight.dtype != x.dtype:
        return None
    return [module.weight, module.bias, None, None, None], None


def _fused_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Replacement ``forward`` of a fused MLP: the function when every part fits, else the original."""
    gate, up, down = (getattr(self, n) for n in _PROJECTIONS)
    flat_shape = torch.Size((x.numel() // x.shape[-1], x.shape[-1]))
    mid_shape = torch.Size((flat_shape[0], down.in_features))
    parts = [_parts(gate, x, flat_shape), _parts(up, x, flat_shape)]
    parts.append(_parts(down, x, mid_shape) if None not in parts else None)
    if None in parts:
        return type(self).forward(self, x)
    tensors = [t for p in parts for t in p[0]]
    y = SwiGluFunction.apply(x.reshape(flat_shape), tuple(p[1] for p in parts), *tensors)
    return y.view(*x.shape[:-1], y.shape[-1])


class SwiGluFunction(torch.autograd.Function):
    """``down(silu(gate(x)) * up(x))`` keeping x, gate(x) and up(x) for backward.

    Inputs: x [N, H]; ``specs`` (gate, up, down ``LoraSpec`` or None); then for gate, up and down
    in turn: weight, bias, a, b, lora_bias (a, b, lora_bias None for a projection without LoRA).
    Output: [N, H_out].
    """

    @staticmethod
    def forward(ctx, x, specs, *tensors):
        """Forward through the three projections; saves what backward needs."""
        ctx.factor_dtypes = [t.dtype if isinstance(t, torch.Tensor) else None for t in tensors]  # a compact weight has none
        tensors = [t if k % 5 < 2 else in_compute_dtype(x.dtype, t)[0] for k, t in enumerate(tensors)]
        gate_t, up_t, down_t = tensors[0:5], tensors[5:10], tensors[10:15]
        g, h_gate = project(x, *gate_t, specs[0])
        u, h_up = project(x, *up_t, specs[1])
        mid = F.silu(g).mul_(u)
        y, h_down = project(mid, *down_t, specs[2])
        del mid
        stashed = [stash_plan(spec) for spec in specs]  # plans as saved tensors: checkpointing frees them
        ctx.specs = tuple(spec for spec, _ in stashed)
        kept = [saved_weight(t[0]) for t in (gate_t, up_t, down_t)]  # a compact base saves nothing
        ctx.sources = [source for _, source in kept]
        ctx.save_for_backward(x, g, u, h_gate, h_up, h_down,
                              kept[0][0], gate_t[2], gate_t[3], kept[1][0], up_t[2], up_t[3], kept[2][0], down_t[2], down_t[3],
                              *(plan for _, plan in stashed))
        return y

    @staticmethod
    def backward(ctx, grad_y):
        """Recompute silu(g) * u, then run the three projections' backward passes."""
        x, g, u, h_gate, h_up, h_down, gw, ga, gb, uw, ua, ub, dw, da, db, *plans = ctx.saved_tensors
        specs = tuple(unstash_plan(spec, plan) for spec, plan in zip(ctx.specs, plans))
        gw, uw, dw = (w if s is None else s for w, s in zip((gw, uw, dw), ctx.sources))  # compact: applied in slices
        need = ctx.needs_input_grad  # x, specs, then 5 per projection
        gate_needs, up_needs, down_needs = (tuple(need[2 + 5 * i + k] for k in (1, 2, 3, 4)) for i in range(3))
        need_mid = need[0] or any(gate_needs) or any(up_needs)
        act = F.silu(g)
        mid = act * u
        grad_mid, down_grads = project_backward(
            grad_y.contiguous(), mid, dw, da, db, h_down, specs[2], down_needs, None, need_mid,
            x_is_scratch=True
        )
        del mid
        grad_x = gate_grads = up_grads = None
        if need_mid:
            grad_u = grad_mid * act
            del act
            grad_g = torch.ops.aten.silu_backward(grad_mid.mul_(u), g)
            del grad_mid
            grad_x, gate_grads = project_backward(grad_g, x, gw, ga, gb, h_gate, specs[0],
                                                  gate_needs, None, need[0])
            del grad_g
            grad_x, up_grads = project_backward(grad_u, x, uw, ua, ub, h_up, specs[1], up_needs,
                                                grad_x, need[0])
        out = [grad_x, None]
        for grads in (gate_grads, up_grads, down_grads):
            out += [None] + ([None] * 4 if grads is None else [grads.bias, grads.a, grads.b, grads.lora_bias])
        return tuple(as_dtype(g, ctx.factor_dtypes[k - 2]) if k >= 2 else g for k, g in enumerate(out))


def _is_candidate(module: nn.Module) -> bool:
    children = [getattr(module, n, None) for n in _PROJECTIONS]
    return all(isinstance(c, (nn.Linear, LoraLayer)) for c in children) and "forward" not in vars(module)  # FrozenLinear is an nn.Linear


@torch.no_grad()
def _computes_swiglu(module: nn.Module) -> bool:
    """Does the module's own forward equal down(silu(gate(x)) * up(x))? (eval mode, no RNG use)."""
    gate = module.gate_proj
    base = gate.base_layer if isinstance(gate, LoraLayer) else gate
    if isinstance(base, FrozenLinear):  # its ``weight`` would dequantise the whole matrix
        device, dtype = base.qdata.device, base.compute_dtype
    else:
        device, dtype = base.weight.device, base.weight.dtype
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(_CHECK_ROWS, base.in_features, generator=generator).to(device, dtype)
    modes = [(m, m.training) for m in module.modules()]  # children may differ from the parent
    module.eval()
    try:
        expected = type(module).forward(module, x)
        got = _fused_forward(module, x)
    finally:
        for m, training in modes:
            m.training = training
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    return expected.shape == got.shape and torch.allclose(got, expected, rtol=tolerance, atol=tolerance)


def fuse_mlps(model: nn.Module) -> list[str]:
    """Route every gated SiLU MLP of ``model`` through ``SwiGluFunction``; returns their names.

    A module qualifies when it has ``gate_proj``, ``up_proj`` and ``down_proj`` linear (or
    LoRA-wrapped linear) children and its forward computes ``down(silu(gate(x)) * up(x))`` on a
    random check input. Calls that cannot use the function (a merged or disabled adapter, mixed
    dtypes) fall back to the module's own forward.
    """
    fused = []
    verdicts: dict[tuple, bool] = {}  # one check per kind of MLP: every layer of a model shares it
    for name, module in model.named_modules():
        if not _is_candidate(module):
            continue
        key = _kind(module)
        if key not in verdicts:
            verdicts[key] = _computes_swiglu(module)
        if verdicts[key]:
            module.forward = types.MethodType(_fused_forward, module)
            fused.append(name)
    return fused


def _kind(module: nn.Module) -> tuple:
    """What decides whether a module's forward is SwiGLU: its class, its activation (type and
    settings) and the kinds of its three projections."""
    act = getattr(module, "act_fn", None)
    return type(module), type(act), repr(act), tuple(type(getattr(module, n)) for n in _PROJECTIONS)


def unfuse_mlps(model: nn.Module) -> int:
    """Give every MLP fused by ``fuse_mlps`` its own forward back; returns how many."""
    count = 0
    for module in model.modules():
        bound = vars(module).get("forward")
        if isinstance(bound, types.MethodType) and bound.__func__ is _fused_forward:
            del module.forward
            count += 1
    return count
