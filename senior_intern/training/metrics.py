"""``TrainingMetricsTracker``: the history of a run and the numbers derived from it (spec v0.8.3i)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senior_intern.training.events import TrainingMetrics


@dataclass(frozen=True)
class MetricsSummary:
    """Summary of a run's training losses and its best validation loss."""

    total_steps: int
    final_loss: float
    min_loss: float
    max_loss: float
    average_loss: float
    best_validation_loss: float | None


class TrainingMetricsTracker:
    """Holds every optimizer step's metrics; epoch averages, best step, summary."""

    def __init__(self) -> None:
        self._history: list[TrainingMetrics] = []

    @property
    def history(self) -> list[TrainingMetrics]:
        """Metrics in the order they were recorded (a copy)."""
        return list(self._history)

    @property
    def total_steps(self) -> int:
        """Number of recorded steps."""
        return len(self._history)

    def record(self, metrics: TrainingMetrics) -> None:
        """Append one step's metrics."""
        self._history.append(metrics)

    def attach_validation(self, validation_loss: float, validation_accuracy: float | None) -> None:
        """Attach an evaluation's result to the latest recorded step."""
        if self._history:
            self._history[-1] = dataclasses.replace(
                self._history[-1], validation_loss=validation_loss, validation_accuracy=validation_accuracy
            )

    def epoch_average_loss(self, epoch: int) -> float:
        """Mean training loss of one epoch (0 when it has no steps)."""
        losses = [m.loss for m in self._history if m.epoch == epoch]
        return sum(losses) / len(losses) if losses else 0.0

    def best_metrics(self) -> TrainingMetrics | None:
        """The step with the lowest validation loss, or None before any evaluation."""
        evaluated = [m for m in self._history if m.validation_loss is not None and not math.isnan(m.validation_loss)]
        return min(evaluated, key=lambda m: m.validation_loss) if evaluated else None  # type: ignore[arg-type, return-value]

    def summary(self) -> MetricsSummary | None:
        """Summary of the run, or None with no history."""
        if not self._history:
            return None
        losses = [m.loss for m in self._history]
        vals = [m.validation_loss for m in self._history if m.validation_loss is not None]
        return MetricsSummary(
            total_steps=len(losses),
            final_loss=losses[-1],
            min_loss=min(losses),
            max_loss=max(losses),
            average_loss=sum(losses) / len(losses),
            best_validation_loss=min(vals) if vals else None,
        )

    def reset(self) -> None:
        """Forget the history."""
        self._history.clear()

    def to_records(self) -> list[dict[str, Any]]:
        """History as JSON-serialisable dicts (checkpoints, metrics.jsonl, adapter metadata)."""
        return [dataclasses.asdict(m) for m in self._history]

    def load_records(self, records: list[dict[str, Any]]) -> None:
        """Replace the history with ``to_records()`` output."""
        self._history = [TrainingMetrics(**r) for r in records]

    def export_json(self) -> str:
        """The history as a JSON array."""
        return json.dumps(self.to_records())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` (NaN/Inf written as null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(clean) + "\n")


# A run has diverged when its loss at the end is not finite, or when the mean of its last few
# step losses is more than DIVERGENCE_FACTOR times the mean of its first few (and higher by more
# than DIVERGENCE_MARGIN nats, so tiny losses that wobble do not count). Such a run ends Failed
# and its adapter never enters the library.
DIVERGENCE_FACTOR = 2.0
DIVERGENCE_MARGIN = 0.5


def divergence(history: list[TrainingMetrics]) -> str | None:
    """Why the run with this step history diverged, or None when it did not (rule above)."""
    losses = [m.loss for m in history]
    if not losses:
        return None
    if not math.isfinite(losses[-1]):
        return f"the training loss at the last step ({history[-1].step}) is {losses[-1]}"
    k = max(1, min(5, len(losses) // 4))
    first = [x for x in losses[:k] if math.isfinite(x)]
    if len(losses) < 2 or not first:
        return None
    start, end = sum(first) / len(first), sum(losses[-k:]) / k
    if not math.isfinite(end):
        return f"the training loss over the last {k} steps is not finite"
    if end > DIVERGENCE_FACTOR * start and end - start > DIVERGENCE_MARGIN:
        return (
            f"the training loss rose from {start:.4f} to {end:.4f} (more than {DIVERGENCE_FACTOR:g}x its start)"
        )
    return None
