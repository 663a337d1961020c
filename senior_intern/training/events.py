"""Events the engine sends to ``on_event``: plain frozen dataclasses, no Qt.

The CLI prints them, the GUI worker re-emits them as Qt signals, tests collect them in a list.
States and statuses carry the spec's names.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Union

from senior_intern.hardware.metrics import HardwareMetrics

PERPLEXITY_CAP = 20.0  # exp(min(loss, 20)) as the spec, so perplexity never overflows


def perplexity(loss: float | None) -> float | None:
    """exp(min(loss, 20)); None for None, NaN for NaN."""
    if loss is None:
        return None
    if math.isnan(loss):
        return math.nan
    return math.exp(min(loss, PERPLEXITY_CAP))


class TrainingState(enum.StrEnum):
    """State of the training service (spec names)."""

    IDLE = "Idle"
    PREPARING = "Preparing"
    TRAINING = "Training"
    PAUSED = "Paused"
    EVALUATING = "Evaluating"
    SAVING = "Saving"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class TrainingStatus(enum.StrEnum):
    """How a run ended."""

    COMPLETED = "Completed"
    CANCELLED = "Cancelled"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"


@dataclass(frozen=True)
class TrainingMetrics:
    """Metrics at one optimizer step (loss is the mean over the step's trained tokens)."""

    step: int
    epoch: int
    loss: float
    learning_rate: float
    grad_norm: float | None = None
    validation_loss: float | None = None
    token_accuracy: float | None = None
    validation_accuracy: float | None = None
    timestamp: float = field(default_factory=time.time)

    @property
    def perplexity(self) -> float:
        """exp(min(loss, 20))."""
        return perplexity(self.loss)  # type: ignore[return-value]

    @property
    def validation_perplexity(self) -> float | None:
        """exp(min(validation loss, 20)), or None before the first evaluation."""
        return perplexity(self.validation_loss)


@dataclass(frozen=True)
class StateChanged:
    """The engine moved from one state to another."""

    previous: TrainingState
    new: TrainingState
    message: str = ""
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Progress:
    """Sent after every optimizer step (the spec's ``TrainingProgress``)."""

    epoch: int  # 1-based
    total_epochs: int
    step_in_epoch: int  # optimizer steps done in this epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    samples_processed: int
    total_samples: int
    tokens_processed: int
    trained_tokens_processed: int
    elapsed: float  # seconds
    eta: float | None  # seconds remaining
    metrics: TrainingMetrics
    hardware: HardwareMetrics
    operation: str = "Training"

    @property
    def percent(self) -> float:
        """Global progress in percent."""
        return self.global_step / self.total_steps * 100 if self.total_steps else 0.0

    @property
    def epoch_percent(self) -> float:
        """Progress through the current epoch in percent."""
        return self.step_in_epoch / self.steps_per_epoch * 100 if self.steps_per_epoch else 0.0

    @property
    def samples_per_second(self) -> float:
        """Samples per second since the run started."""
        return self.samples_processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Tokens (padding excluded) per second since the run started."""
        return self.tokens_processed / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Evaluated:
    """A validation pass finished."""

    global_step: int
    epoch: int
    validation_loss: float
    validation_accuracy: float
    is_best: bool


class LogLevel(enum.StrEnum):
    """Severity of a log message."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class LogMessage:
    """A line for the log pane."""

    level: LogLevel
    text: str
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ModelOpening:
    """Progress of opening the base model (sent while Preparing): ``done`` of ``total`` tensors read."""

    done: int
    total: int

    @property
    def percent(self) -> float:
        """Tensors read in percent."""
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def text(self) -> str:
        """``"Opening base model: 136/272 tensors (50%)"``."""
        return f"Opening base model: {self.done}/{self.total} tensors ({self.percent:.0f}%)"


@dataclass(frozen=True)
class WorldInfo:
    """The processes of a data-parallel run, sent once by rank 0 before the run starts."""

    world_size: int
    backend: str  # "gloo" | "nccl"
    devices: tuple[str, ...]  # the device of rank r at index r

    @property
    def text(self) -> str:
        """``"2 processes (gloo): rank 0 cpu, rank 1 cpu"``."""
        ranks = ", ".join(f"rank {r} {d}" for r, d in enumerate(self.devices))
        return f"{self.world_size} processes ({self.backend}): {ranks}"


Event = Union[StateChanged, Progress, Evaluated, LogMessage, ModelOpening, WorldInfo]
EventCallback = Callable[[Event], None]
