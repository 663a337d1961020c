"""The run plan: counted once, torch-free, and equal to the steps a real run takes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from senior_intern.config import TrainingJob
from senior_intern.training.plan import pad_token_id, plan_run

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_plan_does_not_import_torch() -> None:
    code = "import senior_intern.training.plan, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _job(**training) -> TrainingJob:
    job = TrainingJob(name="plan", base_model_path="base", dataset_path="data.jsonl")
    for key, value in training.items():
        setattr(job.training, key, value)
    return job


TOK = SimpleNamespace(pad_token_id=3, eos_token_id=7)


def test_a_partial_accumulation_still_makes_a_step_and_max_steps_caps_the_run() -> None:
    samples = [[0] * 5, [0] * 9, [0] * 2]
    plan = plan_run(_job(epochs=3, gradient_accumulation_steps=4, warmup_steps=100), TOK, samples, 9)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (9, 3, 9)
    assert plan.warmup_steps == 9  # capped to the run
    assert plan.tokens == 16 and plan.pad_id == 3
    capped = plan_run(_job(epochs=3, gradient_accumulation_steps=4, max_steps=4, warmup_steps=2), TOK, samples, 9)
    assert (capped.steps_per_epoch, capped.total_steps, capped.warmup_steps) == (3, 4, 2)


def test_data_without_a_batch_names_the_dataset() -> None:
    with pytest.raises(ValueError, match=r"The dataset data\.jsonl gives no training batch; add data or lower batch_size"):
        plan_run(_job(), TOK, [], 0)


def test_pad_id_falls_back_to_eos_and_is_none_without_either() -> None:
    assert pad_token_id(SimpleNamespace(pad_token_id=0, eos_token_id=7)) == 0  # 0 is a real id, not "missing"
    assert pad_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=7)) == 7
    assert pad_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=None)) is None


@pytest.mark.parametrize("changes, steps", [
    ({"gradient_accumulation_steps": 2, "epochs": 2}, (9, 5, 10)),  # the last step of an epoch has one batch
    ({"gradient_accumulation_steps": 2, "epochs": 3, "max_steps": 7}, (9, 5, 7)),  # the cap ends the run mid-epoch
])
def test_the_plan_counts_the_steps_a_real_run_takes(tiny_job: TrainingJob, changes: dict, steps: tuple) -> None:
    from senior_intern.data import BatchLoader, load_training_data
    from senior_intern.models.tokenizer import load_tokenizer
    from senior_intern.training.engine import Trainer
    from senior_intern.training.events import Progress

    t = tiny_job.training
    for key, value in changes.items():
        setattr(t, key, value)
    t.eval_every = t.save_every = 0
    tok = load_tokenizer(tiny_job.base_model_path)
    data = load_training_data(tiny_job, tok)
    loader = BatchLoader(data.train, t.batch_size, pad_id=pad_token_id(tok), max_seq_length=t.max_seq_length,
                         packing=t.packing, seed=t.seed)
    plan = plan_run(tiny_job, tok, data.train, len(loader))
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == steps  # 36 training samples, 4 a batch
    events: list = []
    result = Trainer().run(tiny_job, None, events.append)
    assert result.error_message is None
    steps = [e.global_step for e in events if isinstance(e, Progress)]
    assert steps == list(range(1, plan.total_steps + 1))
    assert result.total_steps == plan.total_steps
    assert max(e.step_in_epoch for e in events if isinstance(e, Progress)) == plan.steps_per_epoch
