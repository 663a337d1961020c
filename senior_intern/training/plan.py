"""The run plan: how many optimizer steps a job takes, counted once for every caller.

``plan_run(job, tokenizer, samples, batches_per_epoch)`` turns the batches of one epoch (the
length of the run's ``BatchLoader``, a count of global batches) into steps per epoch (a
partial accumulation at the end of an epoch still makes a step), total steps (capped by
``max_steps``) and the warm-up the schedule uses. ``Session.prepare``, the estimate
(``estimate_data``) and the Train page's dataset analysis (``gui/analysis.py``) all call it, so
a run, its estimate and the step count shown before it cannot count differently.

Torch-free: the GUI and the CLI may import it without loading PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from senior_intern.config import TrainingConfig, TrainingJob


def pad_token_id(tokenizer: Any) -> int | None:
    """The id batches are padded with: the tokenizer's pad token, else its EOS token (None: neither)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def warmup_steps(cfg: TrainingConfig, total_steps: int) -> int:
    """Warm-up steps of a run of ``total_steps``: ``warmup_steps`` capped to the run."""
    return min(cfg.warmup_steps, total_steps)


@dataclass(frozen=True)
class RunPlan:
    """The counts of one run, fixed before its first step."""

    batches_per_epoch: int  # global micro-batches per epoch (the BatchLoader's len)
    steps_per_epoch: int  # optimizer steps per epoch, after gradient accumulation
    total_steps: int  # steps of the whole run, after the max_steps cap
    warmup_steps: int  # steps of linear warm-up, capped to the run
    tokens: int  # tokens of the training samples, one epoch
    pad_id: int | None  # id batches are padded with (pad_token_id)


def plan_run(job: TrainingJob, tokenizer: Any, samples: Sequence[Any], batches_per_epoch: int) -> RunPlan:
    """The plan of ``job`` over the training ``samples`` that make ``batches_per_epoch`` batches.

    ValueError naming the dataset when the data gives no batch at all.
    """
    cfg = job.training
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"The dataset {job.dataset_path} gives no training batch; add data or lower batch_size")
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    return RunPlan(
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps(cfg, total_steps),
        tokens=sum(len(s) for s in samples),
        pad_id=pad_token_id(tokenizer),
    )
