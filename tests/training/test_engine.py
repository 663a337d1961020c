"""The training engine end to end on a tiny Llama: states, events, control, failures, outputs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from senior_intern.config import TrainingJob
from senior_intern.training.control import TrainingControl
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Evaluated, LogMessage, Progress, StateChanged, TrainingState, TrainingStatus
from senior_intern.training.forward import CausalLMForward
from senior_intern.training.loss import ChunkedLossOutput

S = TrainingState


def run(job: TrainingJob, control: TrainingControl | None = None, hook=None):
    events: list = []

    def on_event(e):
        events.append(e)
        if hook is not None:
            hook(e, control)

    result = Trainer().run(job, control, on_event)
    return result, events


def states(events) -> list[tuple[TrainingState, TrainingState]]:
    return [(e.previous, e.new) for e in events if isinstance(e, StateChanged)]


ALLOWED = {
    S.IDLE: {S.PREPARING},
    S.PREPARING: {S.TRAINING, S.FAILED, S.CANCELLED},
    S.TRAINING: {S.EVALUATING, S.SAVING, S.PAUSED, S.FAILED, S.CANCELLED, S.COMPLETED},
    S.EVALUATING: {S.TRAINING, S.SAVING, S.FAILED, S.CANCELLED, S.PAUSED},
    S.SAVING: {S.TRAINING, S.COMPLETED, S.FAILED, S.CANCELLED},
    S.PAUSED: {S.TRAINING, S.CANCELLED, S.SAVING},
}


def test_normal_run_emits_every_state_in_order(tiny_job: TrainingJob) -> None:
    result, events = run(tiny_job)
    assert result.status is TrainingStatus.COMPLETED, result.error_message
    transitions = states(events)
    assert transitions[0] == (S.IDLE, S.PREPARING)
    assert transitions[1] == (S.PREPARING, S.TRAINING)
    assert transitions[-1] == (S.SAVING, S.COMPLETED)
    for prev, new in transitions:
        assert new in ALLOWED[prev], f"illegal transition {prev} -> {new}"
    seen = {new for _, new in transitions}
    assert {S.EVALUATING, S.SAVING} <= seen
    # Every state change comes after the previous one (same object order as emitted).
    for (p1, n1), (p2, _) in zip(transitions, transitions[1:]):
        assert n1 == p2


def test_progress_events_and_outputs(tiny_job: TrainingJob) -> None:
    result, events = run(tiny_job)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.global_step for p in progress] == list(range(1, result.total_steps + 1))
    first, last = progress[0], progress[-1]
    assert last.total_steps == result.total_steps == first.total_steps
    assert last.percent == pytest.approx(100.0)
    assert last.epoch == 2 and last.step_in_epoch == last.steps_per_epoch
    assert last.samples_processed == first.total_samples
    assert last.tokens_processed > last.trained_tokens_processed > 0
    assert last.tokens_per_second > 0 and last.eta == pytest.approx(0.0, abs=1e-6)
    assert all(p.metrics.learning_rate >= 0 and p.metrics.grad_norm is not None for p in progress)
    assert progress[0].hardware.ram_total and progress[0].hardware.process_rss
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    assert evaluations and evaluations[0].is_best
    # Training lowered the loss on this learnable data.
    assert result.metrics_history[-1].loss < result.metrics_history[0].loss
    # Files: job.toml, metrics.jsonl with a line per step and per evaluation, checkpoints, adapter.
    run_dir = Path(result.run_dir)
    assert TrainingJob.load(run_dir / "job.toml").name == "tiny"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for x in lines if x["type"] == "train") == result.total_steps
    assert sum(1 for x in lines if x["type"] == "eval") == len(evaluations)
    assert (run_dir / "checkpoints" / "best" / "state.json").is_file()
    assert len(list((run_dir / "checkpoints").glob("step-*"))) == tiny_job.training.max_checkpoints
    adapter = Path(result.adapter_path)
    assert adapter.parent == Path(tiny_job.adapters_dir)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(k.startswith("base_model.model.model.layers.0.self_attn.q_proj.lora_A") for k in weights)
    meta = json.loads((adapter / "senior_intern.json").read_text())
    assert meta["name"] == "tiny" and meta["rank"] == 4 and meta["base_model"]["hash"]
    assert meta["final_loss"] == pytest.approx(result.metrics_history[-1].loss)
    assert len(meta["history"]["loss"]) == result.total_steps


def test_second_run_gets_its_own_folder_and_one_run_at_a_time(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 2
    first, _ = run(tiny_job)
    second, _ = run(tiny_job)
    assert first.run_dir != second.run_dir and Path(first.run_dir).is_dir()

    trainer = Trainer()
    gate = threading.Event()
    errors: list[Exception] = []

    def hook(e):
        if isinstance(e, Progress) and e.global_step == 1:
            try:
                trainer.run(tiny_job)
            except RuntimeError as exc:
                errors.append(exc)
            gate.set()

    trainer.run(tiny_job, None, hook)
    assert gate.is_set() and errors and "already in progress" in str(errors[0])


def test_pause_blocks_progress_until_resume(tiny_job: TrainingJob) -> None:
    control = TrainingControl()
    times: dict[int, float] = {}

    def hook(e, c):
        if isinstance(e, Progress):
            times[e.global_step] = time.monotonic()
            if e.global_step == 2:
                c.pause()
                threading.Timer(0.6, c.resume).start()

    result, events = run(tiny_job, control, hook)
    assert result.status is TrainingStatus.COMPLETED
    assert times[3] - times[2] >= 0.55
    paused = [i for i, (_, new) in enumerate(states(events)) if new is S.PAUSED]
    assert len(paused) == 1
    before, after = states(events)[paused[0]], states(events)[paused[0] + 1]
    assert after == (S.PAUSED, before[0])  # back to what it was doing (training or evaluating)


def test_cancel_while_paused_ends_cancelled_with_a_resumable_checkpoint(tiny_job: TrainingJob) -> None:
    control = TrainingControl()

    def hook(e, c):
        if isinstance(e, Progress) and e.global_step == 3:
            c.pause()
            threading.Timer(0.3, c.cancel).start()

    result, events = run(tiny_job, control, hook)
    assert result.status is TrainingStatus.CANCELLED and not result.success
    assert (S.PAUSED, S.CANCELLED) in states(events) or (S.SAVING, S.CANCELLED) in states(events)
    assert states(events)[-1][1] is S.CANCELLED
    assert result.total_steps == 3
    assert result.resume_checkpoint and Path(result.resume_checkpoint, "state.json").is_file()
    assert result.adapter_path is None


def test_cancel_while_running_returns_within_a_micro_batch(tiny_job: TrainingJob) -> None:
    tiny_job.training.gradient_accumulation_steps = 3
    control = TrainingControl()

    def hook(e, c):
        if isinstance(e, Progress) and e.global_step == 1:
            c.cancel()

    result, _ = run(tiny_job, control, hook)
    assert result.status is TrainingStatus.CANCELLED and result.total_steps == 1


def _nan_forward(monkeypatch, from_call: int = 0):
    original = CausalLMForward.__call__
    calls = {"n": 0}

    def patched(self, inputs, labels):
        parts = original(self, inputs, labels)
        if torch.is_grad_enabled():
            calls["n"] += 1
        if torch.is_grad_enabled() and calls["n"] > from_call:
            return ChunkedLossOutput(parts.loss_sum * float("nan"), parts.n_valid, parts.n_correct)
        return parts

    monkeypatch.setattr(CausalLMForward, "__call__", patched)


def test_nan_guard_skips_steps_then_fails_with_advice(tiny_job: TrainingJob, monkeypatch) -> None:
    tiny_job.training.max_nonfinite_steps = 3
    _nan_forward(monkeypatch, from_call=4)
    result, events = run(tiny_job)
    assert result.status is TrainingStatus.FAILED
    assert "Lower the learning rate" in result.error_message
    assert result.skipped_steps == 3 and result.total_steps == 6  # 4 good, 2 skipped; the 3rd non-finite one fails the run
    warnings = [e for e in events if isinstance(e, LogMessage) and "step skipped" in e.text]
    assert len(warnings) == 3
    # The last checkpoint is kept and offered for resuming; its weights are finite.
    assert result.resume_checkpoint
    saved = load_file(str(Path(result.resume_checkpoint) / "lora.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert states(events)[-1][1] is S.FAILED


def test_isolated_nan_step_is_skipped_and_run_completes(tiny_job: TrainingJob, monkeypatch) -> None:
    original = CausalLMForward.__call__
    calls = {"n": 0}

    def patched(self, inputs, labels):
        parts = original(self, inputs, labels)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 2:
                return ChunkedLossOutput(parts.loss_sum * float("inf"), parts.n_valid, parts.n_correct)
        return parts

    monkeypatch.setattr(CausalLMForward, "__call__", patched)
    result, _ = run(tiny_job)
    assert result.status is TrainingStatus.COMPLETED and result.skipped_steps == 1
    weights = load_file(str(Path(result.adapter_path) / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_out_of_memory_fails_with_advice_and_frees_for_next_run(tiny_job: TrainingJob, monkeypatch) -> None:
    original = CausalLMForward.__call__
    calls = {"n": 0}

    def patched(self, inputs, labels):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes.")
        return original(self, inputs, labels)

    monkeypatch.setattr(CausalLMForward, "__call__", patched)
    tiny_job.training.save_every = 1
    result, events = run(tiny_job)
    assert result.status is TrainingStatus.FAILED
    assert "Out of memory at batch size 4 and sequence length 64" in result.error_message
    assert result.resume_checkpoint and "step-0000003" in result.resume_checkpoint
    monkeypatch.setattr(CausalLMForward, "__call__", original)
    again, _ = run(tiny_job)
    assert again.status is TrainingStatus.COMPLETED


def test_early_stopping_on_plateau_uses_the_best_checkpoint(tiny_job: TrainingJob) -> None:
    t = tiny_job.training
    t.learning_rate, t.min_learning_rate, t.warmup_steps = 1e-9, 0.0, 0
    t.eval_every, t.early_stopping_patience, t.early_stopping_min_delta, t.epochs = 1, 2, 1e-3, 5
    result, events = run(tiny_job)
    assert result.status is TrainingStatus.EARLY_STOPPED and result.success
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    assert len(evaluations) == 3  # the best one, then two without improvement
    assert result.final_validation_loss == pytest.approx(evaluations[0].validation_loss)
    assert any("best checkpoint" in e.text for e in events if isinstance(e, LogMessage))
    assert result.adapter_path


def test_invalid_job_fails_in_preparing_with_the_errors(tiny_job: TrainingJob) -> None:
    tiny_job.training.epochs = 0
    tiny_job.dataset_path = "/nope/data.jsonl"
    result, events = run(tiny_job)
    assert result.status is TrainingStatus.FAILED
    assert "Epochs must be at least 1" in result.error_message and "Dataset not found: /nope/data.jsonl" in result.error_message
    assert states(events) == [(S.IDLE, S.PREPARING), (S.PREPARING, S.FAILED)]


def test_broken_dataset_fails_with_file_and_line(tiny_job: TrainingJob, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    tiny_job.dataset_path = str(bad)
    result, _ = run(tiny_job)
    assert result.status is TrainingStatus.FAILED
    assert f"{bad}:2" in result.error_message or "bad.jsonl:2" in result.error_message


def test_gradient_checkpointing_gives_the_same_run(tiny_job: TrainingJob, tmp_path: Path) -> None:
    tiny_job.training.max_steps = 4
    plain, _ = run(tiny_job)
    tiny_job.training.gradient_checkpointing = True
    tiny_job.output_dir = str(tmp_path / "gc")
    checkpointed, _ = run(tiny_job)
    assert checkpointed.status is TrainingStatus.COMPLETED
    losses = [m.loss for m in plain.metrics_history], [m.loss for m in checkpointed.metrics_history]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
