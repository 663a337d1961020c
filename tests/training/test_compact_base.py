"""Training on a compact base: int8/int4 Hugging Face bases and opening progress events."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from senior_intern.config import TrainingJob
from senior_intern.models import load_base_model
from senior_intern.models.quantized import FrozenLinear, compact_bytes
from senior_intern.training.engine import Trainer
from senior_intern.training.events import ModelOpening, Progress
from senior_intern.training.events import LogMessage, TrainingStatus


def _run(job: TrainingJob):
    events: list = []
    result = Trainer().run(job, None, events.append)
    return result, events


@pytest.mark.parametrize(("kind", "tolerance"), [("int8", 0.01), ("int4", 0.1)])
def test_quantised_folder_base_is_smaller_and_close(tiny_model_dir, kind, tolerance):
    dense = load_base_model(tiny_model_dir)
    quantised = load_base_model(tiny_model_dir, base_quantization=kind)
    assert quantised.info.base_held == kind and dense.info.base_held == "float"
    linears = [m for m in quantised.model.modules() if isinstance(m, FrozenLinear)]
    assert linears and {m.kind for m in linears} <= {kind, "int8"}  # int4 keeps odd widths as int8
    assert not isinstance(quantised.model.get_output_embeddings(), FrozenLinear)  # the LM head stays dense
    packed, _ = compact_bytes(quantised.model)
    dense_linear = sum(m.in_features * m.out_features * 4 for m in linears)
    assert packed < (0.3 if kind == "int8" else 0.2) * dense_linear
    ids = torch.arange(1, 40).reshape(1, -1)
    with torch.no_grad():
        loss_d = dense.model(ids, labels=ids).loss.item()
        loss_q = quantised.model(ids, labels=ids).loss.item()
    assert abs(loss_q - loss_d) / loss_d < tolerance


def test_unknown_base_quantization_is_refused(tiny_job):
    job = dataclasses.replace(tiny_job, training=dataclasses.replace(tiny_job.training, base_quantization="int3"))
    errors = job.validate().errors
    assert any("base quantization 'int3'" in e and "int8" in e for e in errors)


def test_a_run_on_an_int4_base_learns_and_reports_opening(tiny_job):
    job = dataclasses.replace(tiny_job, training=dataclasses.replace(tiny_job.training, base_quantization="int4"))
    result, events = _run(job)
    assert result.status is TrainingStatus.COMPLETED, result.error_message
    opening = [e for e in events if isinstance(e, ModelOpening)]
    assert opening and opening[-1].done == opening[-1].total and opening[-1].percent == 100.0
    first_step = next(i for i, e in enumerate(events) if isinstance(e, Progress))
    assert events.index(opening[-1]) < first_step
    losses = [e.metrics.loss for e in events if isinstance(e, Progress)]
    assert losses[-1] < losses[0]
    logs = [e.text for e in events if isinstance(e, LogMessage)]
    assert any("weights as int4" in t for t in logs)


def test_the_cli_shows_opening_as_a_bar():
    import io

    from senior_intern.cli.train_cmd import ConsoleReporter

    stream = io.StringIO()
    reporter = ConsoleReporter(stream)
    for done in (0, 136, 272):
        reporter(ModelOpening(done, 272))
    reporter.close()
    text = stream.getvalue()
    assert "Opening base model" in text and "272/272" in text
    assert reporter.opening is None  # closed once every tensor was read


@pytest.mark.parametrize("kind, advice", [("none", "set base_quantization to int8 or int4"),
                                          ("int8", "set base_quantization to int4")])
def test_a_base_whose_weights_exceed_the_free_memory_is_refused_before_loading(tiny_job, monkeypatch, kind, advice):
    """The run stops with the figures and what to change, and nothing is opened."""
    from senior_intern.hardware.metrics import format_bytes
    from senior_intern.models.holding import base_holding
    from senior_intern.training import estimate

    job = dataclasses.replace(tiny_job, training=dataclasses.replace(tiny_job.training, base_quantization=kind))
    weights = base_holding(job.base_model_path, kind).memory_bytes(4)
    monkeypatch.setattr(estimate, "_available", lambda device: weights - 1)
    result, events = _run(job)
    assert result.status is TrainingStatus.FAILED
    message = result.error_message
    assert f"{job.base_model_path} does not fit: its weights alone take {format_bytes(weights)}" in message
    assert f"this machine has {format_bytes(weights - 1)} free" in message and "pre-flight estimate" in message and advice in message
    assert not [e for e in events if isinstance(e, ModelOpening)]  # refused before the model was read
    monkeypatch.setattr(estimate, "_available", lambda device: weights)  # exactly enough for the weights: it runs
    result, _ = _run(dataclasses.replace(job, training=dataclasses.replace(job.training, max_steps=1)))
    assert result.status is TrainingStatus.COMPLETED, result.error_message
