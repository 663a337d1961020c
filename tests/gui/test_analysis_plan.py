"""The Train page's step count is the run's own plan (training.plan.plan_run), not a second count."""

from __future__ import annotations

import copy

import pytest

from senior_intern.gui.analysis import analyze_dataset
from senior_intern.training.estimate_data import data_facts


@pytest.mark.parametrize("packing, batch_size, accumulation, epochs, max_steps", [
    (False, 4, 1, 2, None),
    (False, 5, 3, 3, None),  # a short last batch and a partial accumulation group per epoch
    (True, 3, 2, 2, None),
    (False, 2, 2, 4, 7),  # capped by max_steps
])
def test_analysis_counts_steps_as_the_run_and_the_estimate_do(tiny_job, packing, batch_size, accumulation, epochs, max_steps):
    job = copy.deepcopy(tiny_job)
    t = job.training
    t.packing, t.batch_size, t.gradient_accumulation_steps, t.epochs, t.max_steps = packing, batch_size, accumulation, epochs, max_steps
    analysis = analyze_dataset(job)
    facts = data_facts(job)
    assert (analysis.steps_per_epoch, analysis.total_steps) == (facts.steps_per_epoch, facts.total_steps)
    if max_steps is not None:
        assert analysis.total_steps == max_steps
    else:
        assert analysis.total_steps == analysis.steps_per_epoch * epochs


def test_a_single_training_sample_makes_one_step_per_epoch(tiny_job, tmp_path):
    job = copy.deepcopy(tiny_job)
    job.dataset_path = str(tmp_path / "one.jsonl")
    (tmp_path / "one.jsonl").write_text('{"prompt": "def add ->", "completion": " add def"}\n')
    job.validation_split = 0.0
    analysis = analyze_dataset(job)
    assert analysis.train_samples == 1 and analysis.steps_per_epoch == 1


def test_the_model_card_says_how_the_base_is_held(demo_gguf, tiny_model_dir):
    from senior_intern.gui.analysis import model_details

    demo = model_details(str(demo_gguf))
    assert demo["Held as"].startswith("compact: the GGUF file's own blocks")
    assert demo["\u2003Q4_1"] == "210 weight matrices, 63.3 MB"
    assert demo["In memory"].startswith("92.1 MB with float32")
    folder = model_details(str(tiny_model_dir), "int8")
    assert folder["Held as"] == "compact: int8, quantised at load" and "\u2003int8" in folder
