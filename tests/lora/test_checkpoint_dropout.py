"""LoRA dropout under gradient checkpointing (issue #16, item 5): the plans are saved tensors, so
checkpointing frees them after the forward pass, and recomputation draws the same ones."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from senior_intern.config import LoraConfig, TrainingConfig
from senior_intern.data import BatchLoader, Sample
from senior_intern.lora import LoraModel
from senior_intern.lora.dropout import DropPlan
from senior_intern.training.forward import CausalLMForward, training_inputs
from senior_intern.training.prepare import prepare_for_training
from tests.conftest import make_tiny_llama


def _batch():
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i, n in enumerate((20, 31, 17, 25)):
        ids = torch.randint(1, 300, (n,), generator=gen).tolist()
        samples.append(Sample(ids, [-100] * 4 + ids[4:], f"s{i}"))
    return next(iter(BatchLoader(samples, 4, pad_id=0, max_seq_length=32, shuffle=False)))


def _setup(checkpointing: bool, fuse: bool):
    model = make_tiny_llama(seed=2)
    lora = LoraModel(model, LoraConfig(rank=4, alpha=8.0, dropout=0.2, target_modules=["all-linear"]))
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    prep = prepare_for_training(model, TrainingConfig(gradient_checkpointing=checkpointing), fuse_mlp=fuse)
    lora.train()
    return lora, CausalLMForward(model, chunk_size=16), prep


@pytest.fixture
def plans(monkeypatch):
    """Weak references to the tensor of every drop plan drawn."""
    refs: list[weakref.ref] = []
    real = DropPlan.draw.__func__

    def draw(cls, *args, **kwargs):
        plan = real(cls, *args, **kwargs)
        refs.append(weakref.ref(plan.tensor))
        return plan

    monkeypatch.setattr(DropPlan, "draw", classmethod(draw))
    return refs


@pytest.mark.parametrize("fuse", [True, False])
def test_checkpointing_frees_the_plans_after_forward_and_gives_the_same_gradients(plans, fuse) -> None:
    batch = _batch()
    grads = {}
    for checkpointing in (False, True):
        lora, forward, prep = _setup(checkpointing, fuse)
        assert bool(prep.fused_mlps) is fuse and prep.gradient_checkpointing is checkpointing
        plans.clear()
        torch.manual_seed(7)
        parts = forward(training_inputs(batch), batch.labels)
        gc.collect()
        alive = sum(r() is not None for r in plans)
        drawn = len(plans)
        assert drawn >= 2 * 7  # every adapted projection of both layers drew a plan
        if checkpointing:
            assert alive == 0, f"{alive} of {drawn} drop plans outlived the checkpointed forward"
        else:
            assert alive == drawn  # kept for backward, as they must be
        parts.loss_sum.backward()
        if checkpointing:
            assert len(plans) == 2 * drawn  # recomputed in backward...
        grads[checkpointing] = {n: p.grad.clone() for n, p in lora.model.named_parameters() if p.requires_grad}
    for name, g in grads[False].items():  # ... to the very same masks
        torch.testing.assert_close(grads[True][name], g, rtol=1e-5, atol=1e-7, msg=name)
