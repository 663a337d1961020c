"""The shared pieces of one run's lifecycle: its state, its position, how it ends.

``Trainer`` (engine.py) runs a job as validate → lock → ``Session.prepare`` → ``Session.train``
→ ``Session.finish`` (or ``Session.stop`` when a ``RunStopped`` or another error ends it) →
``Session.close``, and maps the outcome to a status. Both hold the same ``RunState``, the one
copy of the run's state, which emits a ``StateChanged`` event on every change.
``Finished`` is what ``Session.finish`` hands back and ``RunSummary`` what the result reports
of a session (an empty one when the run failed before a session existed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from senior_intern.training.events import StateChanged, TrainingMetrics, TrainingState, TrainingStatus
from senior_intern.training.result import CheckpointInfo


class RunStopped(Exception):
    """Raised inside the loop to end a run early: cancelled, or failed with a user message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "cancelled" | "failed"


class RunState:
    """The state of the run in progress, and its ``StateChanged`` events through ``emit``."""

    def __init__(self, emit: Callable[[Any], None] | None = None) -> None:
        self.current = TrainingState.IDLE
        self._emit = emit

    def set(self, new: TrainingState, message: str = "") -> None:
        """Move to ``new``; a ``StateChanged`` event when it differs from the current state."""
        previous, self.current = self.current, new
        if previous != new and self._emit is not None:
            self._emit(StateChanged(previous, new, message))

    def reset(self) -> None:
        """Back to Idle without an event (the run is over)."""
        self.current = TrainingState.IDLE


@dataclass
class Position:
    """Where the run is: what a checkpoint must restore besides tensors."""

    epoch: int = 0  # 0-based epoch in progress
    global_step: int = 0
    step_in_epoch: int = 0
    samples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    skipped_steps: int = 0
    nonfinite_streak: int = 0
    best_validation_loss: float | None = None
    evaluated_at: int = -1  # step of the last evaluation
    elapsed_before: float = 0.0  # training seconds spent before this process resumed it


@dataclass(frozen=True)
class Finished:
    """How a run that trained to its end finished (``Session.finish``)."""

    status: TrainingStatus  # COMPLETED or EARLY_STOPPED
    adapter_id: str | None  # None on ranks other than 0, which write nothing
    adapter_path: Path | None
    final_validation_loss: float | None
    final_checkpoint: Path | None  # the checkpoint written at the end, None when the last step was saved already


@dataclass(frozen=True)
class RunSummary:
    """What a ``TrainingResult`` reports of a session (``Session.summary``)."""

    history: list[TrainingMetrics] = field(default_factory=list)
    best_metrics: TrainingMetrics | None = None
    global_step: int = 0
    samples: int = 0
    tokens: int = 0
    skipped_steps: int = 0
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    run_dir: Path | None = None
