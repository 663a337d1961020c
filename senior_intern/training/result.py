"""``TrainingResult`` and ``CheckpointInfo``: what a run hands back (spec v0.8.3c)."""

from __future__ import annotations

from dataclasses import dataclass, field

from senior_intern.config import LoraConfig, TrainingConfig
from senior_intern.training.events import TrainingMetrics, TrainingStatus


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint folder on disk."""

    path: str
    step: int
    epoch: int
    loss: float | None
    validation_loss: float | None
    created_at: float
    size_bytes: int
    is_best: bool


@dataclass(frozen=True)
class TrainingResult:
    """Outcome of ``Trainer.run`` / ``Trainer.resume``."""

    job_id: str
    status: TrainingStatus
    adapter_path: str | None = None
    adapter_id: str | None = None
    final_metrics: TrainingMetrics | None = None
    best_metrics: TrainingMetrics | None = None
    final_validation_loss: float | None = None
    duration: float = 0.0  # seconds of training in this process
    total_steps: int = 0  # optimizer steps completed (whole run, resumes included)
    total_epochs: int = 0
    samples_processed: int = 0
    tokens_processed: int = 0
    skipped_steps: int = 0  # optimizer steps skipped for a non-finite loss or gradient
    error_message: str | None = None
    error_detail: str | None = None  # traceback text, for logs only
    resume_checkpoint: str | None = None  # where to resume a cancelled/failed run from
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    metrics_history: list[TrainingMetrics] = field(default_factory=list)
    training_config: TrainingConfig | None = None
    lora_config: LoraConfig | None = None
    started_at: float = 0.0
    ended_at: float = 0.0
    run_dir: str | None = None

    @property
    def success(self) -> bool:
        """True for Completed and EarlyStopped (an adapter was saved)."""
        return self.status in (TrainingStatus.COMPLETED, TrainingStatus.EARLY_STOPPED)

    @property
    def average_samples_per_second(self) -> float:
        """Samples per second over the run's duration in this process."""
        return self.samples_processed / self.duration if self.duration > 0 else 0.0
