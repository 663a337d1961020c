"""No leaks: resident memory stays flat over many steps, and back-to-back runs end at about the same memory."""

from __future__ import annotations

import gc

import psutil

from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Progress, TrainingStatus

MB = 1024 * 1024


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_resident_memory_is_flat_over_many_steps(tiny_job: TrainingJob) -> None:
    t = tiny_job.training
    t.epochs, t.max_steps, t.eval_every, t.save_every, t.batch_size = 40, 300, 50, 100, 2
    samples: dict[int, int] = {}

    def on_event(e):
        if isinstance(e, Progress) and e.global_step in (50, 300):
            samples[e.global_step] = _rss()

    result = Trainer().run(tiny_job, None, on_event)
    assert result.status is TrainingStatus.COMPLETED and result.total_steps == 300
    growth = samples[300] - samples[50]
    assert growth < 12 * MB, f"RSS grew by {growth / MB:.1f} MB over 250 steps"


def test_back_to_back_runs_end_at_about_the_same_memory(tiny_job: TrainingJob) -> None:
    tiny_job.training.max_steps = 20
    trainer = Trainer()  # the GUI keeps one engine for the whole session
    ends = []
    for _ in range(3):
        result = trainer.run(tiny_job)
        assert result.status is TrainingStatus.COMPLETED
        del result
        ends.append(_rss())
    # The first run warms caches (imports, allocator pools); later runs must not keep adding.
    assert ends[2] - ends[1] < 10 * MB, [e / MB for e in ends]
