"""``prepare_for_training``: the model changes after LoRA in one step, once; ``CausalLMForward`` changes nothing."""

from __future__ import annotations

import random
import types

import pytest
import torch
from torch import nn

from senior_intern.config import LoraConfig, TrainingConfig, TrainingJob
from senior_intern.data import BatchLoader, Sample
from senior_intern.lora import LoraModel
from senior_intern.lora.fused_mlp import fuse_mlps
from senior_intern.training.attention import SEGMENT_ATTENTION, enable_segment_attention
from senior_intern.training.events import LogMessage
from senior_intern.training.forward import CausalLMForward, training_inputs
from senior_intern.training.prepare import prepare_for_training, training_prep
from senior_intern.training.session import Session
from tests.conftest import make_tiny_llama


def _packed_batch():
    rng = random.Random(0)
    samples = []
    for i, n in enumerate([9, 17, 5, 30, 12, 7, 21, 3]):
        ids = [rng.randrange(1, 300) for _ in range(n)]
        samples.append(Sample(ids, [-100] * (n // 3) + ids[n // 3:], f"s{i}"))
    loader = BatchLoader(samples, 3, pad_id=0, max_seq_length=40, packing=True, shuffle=False, pad_to_multiple_of=8)
    return next(iter(loader))


def _lora_model():
    model = make_tiny_llama(seed=3)
    lora = LoraModel(model, LoraConfig(rank=4, alpha=8.0, dropout=0.0, target_modules=["all-linear"]))
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    lora.train()
    return model, lora


def _fused(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(vars(m).get("forward"), types.MethodType)]


def _loss_and_grads(model: nn.Module, batch):
    forward = CausalLMForward(model, chunk_size=16)
    parts = forward(training_inputs(batch, torch.float32, "cpu", forward.segments), batch.labels)
    parts.loss_sum.backward()
    return parts.loss_sum.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_prepare_makes_every_change_once_and_refuses_a_second_time() -> None:
    model, _ = _lora_model()
    assert training_prep(model) is None
    prep = prepare_for_training(model, TrainingConfig(gradient_checkpointing=True))
    assert prep.gradient_checkpointing and model.is_activation_checkpointing
    assert prep.fused_mlps == ("model.layers.0.mlp", "model.layers.1.mlp") and len(_fused(model)) == 2
    assert prep.segments and model.config._attn_implementation == SEGMENT_ATTENTION
    assert training_prep(model) is prep
    assert CausalLMForward(model).segments is True
    with pytest.raises(RuntimeError, match="already prepared for training"):
        prepare_for_training(model, TrainingConfig())
    assert training_prep(model) is prep and model.is_activation_checkpointing  # the refusal changed nothing


def test_forward_changes_nothing_on_the_model() -> None:
    model, _ = _lora_model()
    forward = CausalLMForward(model, chunk_size=16)
    assert _fused(model) == [] and model.config._attn_implementation == "sdpa"
    assert forward.segments is False and training_prep(model) is None


def test_each_change_can_be_left_out() -> None:
    model, _ = _lora_model()
    prep = prepare_for_training(model, TrainingConfig(), fuse_mlp=False, segment_attention=False)
    assert prep.fused_mlps == () and not prep.segments and not prep.gradient_checkpointing
    assert _fused(model) == [] and model.config._attn_implementation == "sdpa" and not model.is_activation_checkpointing
    assert "0 fused MLP(s)" in prep.describe() and "gradient checkpointing off" in prep.describe()


def test_prepared_model_gives_the_loss_and_gradients_of_the_steps_it_replaces() -> None:
    batch = _packed_batch()
    # The three changes made one by one, as the session and CausalLMForward's constructor did.
    by_hand, _ = _lora_model()
    by_hand.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert len(fuse_mlps(by_hand)) == 2 and enable_segment_attention(by_hand)
    prepared, _ = _lora_model()
    prepare_for_training(prepared, TrainingConfig(gradient_checkpointing=True))
    plain, _ = _lora_model()  # no change at all: unfused MLPs, the 4D block mask, no recomputation
    loss_hand, grads_hand = _loss_and_grads(by_hand, batch)
    loss_prep, grads_prep = _loss_and_grads(prepared, batch)
    loss_plain, grads_plain = _loss_and_grads(plain, batch)
    assert torch.equal(loss_prep, loss_hand)
    assert grads_prep.keys() == grads_hand.keys() == grads_plain.keys() and len(grads_prep) == 2 * 2 * 7
    for name in grads_hand:
        assert torch.equal(grads_prep[name], grads_hand[name]), name
        torch.testing.assert_close(grads_prep[name], grads_plain[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(loss_prep, loss_plain, rtol=1e-5, atol=1e-5)


def test_a_model_without_checkpointing_is_named_and_left_unprepared() -> None:
    toy = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="Sequential does not support gradient checkpointing; turn gradient_checkpointing off"):
        prepare_for_training(toy, TrainingConfig(gradient_checkpointing=True))
    assert training_prep(toy) is None
    assert prepare_for_training(toy, TrainingConfig()).fused_mlps == ()


def test_the_session_prepares_its_model_in_one_logged_step(tiny_job: TrainingJob) -> None:
    tiny_job.training.gradient_checkpointing = True
    events: list = []
    session = Session(tiny_job, events.append)
    try:
        session.prepare()
        prep = training_prep(session.forward.model)
        assert prep is not None and prep.gradient_checkpointing and len(prep.fused_mlps) == 2
        assert session.forward.segments is prep.segments
        line = prep.describe(session.device, session.dtype)
        assert "segment attention (per-sample)" in line and "gradient checkpointing on" in line
        assert line in [e.text for e in events if isinstance(e, LogMessage)]
    finally:
        session.close()
