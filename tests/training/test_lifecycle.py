"""One run lifecycle: ``Session.prepare`` / ``train`` / ``finish`` | ``stop`` / ``close``, one state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from senior_intern.config import TrainingJob
from senior_intern.training import checkpoint as ckpt
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import Progress, StateChanged, TrainingState, TrainingStatus
from senior_intern.training.lifecycle import RunState, RunStopped
from senior_intern.training.runlock import RunInUseError, RunLock
from senior_intern.training.session import Session

S = TrainingState


def test_run_state_emits_each_change_once_and_resets_silently() -> None:
    events: list = []
    state = RunState(events.append)
    state.set(S.PREPARING, "p")
    state.set(S.PREPARING, "again")  # no change: no event
    state.set(S.TRAINING)
    assert [(e.previous, e.new, e.message) for e in events] == [(S.IDLE, S.PREPARING, "p"), (S.PREPARING, S.TRAINING, "")]
    state.reset()
    assert state.current is S.IDLE and len(events) == 2


def test_every_session_attribute_exists_from_construction(tiny_job: TrainingJob) -> None:
    session = Session(tiny_job, lambda _e: None)
    before = set(vars(session))
    # A session that never prepared can still be stopped, summarised and closed.
    assert session.stop(RunStopped("failed", "before prepare")) is None
    summary = session.summary()
    assert summary.global_step == 0 and summary.history == [] and summary.checkpoints == [] and summary.run_dir is None
    session.close()
    session.prepare()
    try:
        assert set(vars(session)) == before, "prepare() added attributes: " + ", ".join(sorted(set(vars(session)) - before))
        assert session.lora is not None and session.optimizer is not None and session.total_steps > 0
    finally:
        session.close()


def test_session_and_its_state_are_one_copy(tiny_job: TrainingJob) -> None:
    events: list = []
    states = RunState(events.append)
    session = Session(tiny_job, events.append, states=states)
    assert session.state is S.IDLE
    session.set_state(S.PREPARING, "x")
    assert states.current is S.PREPARING and session.state is S.PREPARING
    states.set(S.TRAINING)
    assert session.state is S.TRAINING
    assert [e.new for e in events if isinstance(e, StateChanged)] == [S.PREPARING, S.TRAINING]


def test_finish_after_early_stopping_saves_the_best_checkpoint_as_the_adapter(tiny_job: TrainingJob) -> None:
    t = tiny_job.training
    t.learning_rate, t.min_learning_rate, t.warmup_steps = 1e-9, 0.0, 0
    t.eval_every, t.early_stopping_patience, t.early_stopping_min_delta, t.epochs = 1, 2, 1e-3, 5
    events: list = []
    session = Session(tiny_job, events.append)
    try:
        session.prepare()
        assert session.train() is True  # stopped early
        best = ckpt.load(session.checkpoints.best())
        finished = session.finish(True)
    finally:
        session.close()
    assert finished.status is TrainingStatus.EARLY_STOPPED
    assert finished.final_validation_loss == pytest.approx(session.pos.best_validation_loss)
    assert finished.final_checkpoint is not None and finished.final_checkpoint.name == ckpt.step_name(session.pos.global_step)
    for name, tensor in session.lora.lora_state_dict().items():
        torch.testing.assert_close(tensor, best.lora_state[name], msg=name)
    assert finished.adapter_path.parent == Path(tiny_job.adapters_dir) and finished.adapter_path.name == finished.adapter_id
    done = json.loads((session.run_dir / "finished.json").read_text())
    assert done["adapter_id"] == finished.adapter_id
    assert [e.new for e in events if isinstance(e, StateChanged)][-1] is S.SAVING  # the Trainer says Completed


def test_finish_refuses_non_finite_weights_and_saves_no_adapter(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 2
    session = Session(tiny_job, lambda _e: None)
    try:
        session.prepare()
        session.train()
        with torch.no_grad():
            session.params[0].fill_(float("nan"))
        with pytest.raises(RunStopped, match="not finite") as stopped:
            session.finish(False)
        assert stopped.value.kind == "failed"
        assert session.stop(stopped.value) == str(session.checkpoints.latest())
    finally:
        session.close()
    assert not Path(tiny_job.adapters_dir).exists() or not any(Path(tiny_job.adapters_dir).iterdir())


def test_stop_after_a_cancel_saves_a_checkpoint_at_the_start_of_the_group(tiny_job: TrainingJob) -> None:
    t = tiny_job.training
    t.save_every, t.eval_every, t.gradient_accumulation_steps = 100, 0, 2
    control = TrainingControl()

    def on_event(e):
        if isinstance(e, Progress) and e.global_step == 1:
            control.cancel()  # seen by the first micro-batch of step 2

    session = Session(tiny_job, on_event, control)
    try:
        session.prepare()
        group_start = None
        with pytest.raises(RunStopped) as stopped:
            session.train()
        group_start = session.group_start
        assert stopped.value.kind == "cancelled" and group_start is not None
        resume_from = session.stop(stopped.value)
    finally:
        session.close()
    assert resume_from is not None and Path(resume_from).name == ckpt.step_name(1)
    saved = ckpt.load(resume_from)
    assert saved.state["global_step"] == 1 and saved.state["loader"] == group_start[0]


def test_close_releases_the_run_lock(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 1
    session = Session(tiny_job, lambda _e: None)
    session.prepare()
    with pytest.raises(RunInUseError):
        RunLock.acquire(session.run_dir)
    session.close()
    session.close()  # twice is harmless
    RunLock.acquire(session.run_dir).release()
