"""Validation of a training job: the spec's rules plus the ones it missed, as data.

``validate_job(job)`` (``TrainingJob.validate``) returns a ``ValidationResult`` of ``Issue``s.
Each issue names the fields it is about (dotted keys such as ``"training.learning_rate"``, the
keys the GUI form and ``job.toml`` use; empty when it is about the job as a whole), its message
and its severity. The GUI marks the fields an issue names, the CLI prints the messages, and
nobody maps a message back to a field by its wording.

Torch-free, like ``config.py``: the GUI validates a job before the engine loads.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from senior_intern.config import BASE_QUANTIZATIONS, SUPPORTED_DTYPES, LoraBias, OptimizerType

if TYPE_CHECKING:
    from senior_intern.config import TrainingJob


class Severity(enum.StrEnum):
    """An error blocks the run; a warning does not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Issue:
    """One finding about a job: the fields it is about, what to fix, how serious it is."""

    fields: tuple[str, ...]
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return self.message


@dataclass
class ValidationResult:
    """Outcome of ``TrainingJob.validate()``: errors block a run, warnings do not."""

    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """The messages of the errors."""
        return [i.message for i in self.issues if i.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[str]:
        """The messages of the warnings."""
        return [i.message for i in self.issues if i.severity is Severity.WARNING]

    @property
    def is_valid(self) -> bool:
        """True when there is no error."""
        return not self.errors


# The rules that bound one training setting from below: (field, bound, strict, message). strict:
# the value must exceed the bound; otherwise reach it. In the order they are reported.
_LOWER_BOUNDS: tuple[tuple[str, float, bool, str], ...] = (
    ("training.epochs", 1, False, "Epochs must be at least 1"),
    ("training.batch_size", 1, False, "Batch size must be at least 1"),
    ("training.learning_rate", 0, True, "Learning rate must be positive"),
    ("training.gradient_accumulation_steps", 1, False, "Gradient accumulation steps must be at least 1"),
    ("training.warmup_steps", 0, False, "Warm-up steps must not be negative"),
    ("training.weight_decay", 0, False, "Weight decay must not be negative"),
    ("training.min_learning_rate", 0, False, "Minimum learning rate must not be negative"),
    ("training.adam_epsilon", 0, True, "Epsilon must be positive"),
    ("training.momentum", 0, False, "Momentum must not be negative"),
    ("training.num_cycles", 1, False, "Number of cycles must be at least 1"),
    ("training.cycle_multiplier", 1, False, "Cycle multiplier must be at least 1"),
    ("training.polynomial_power", 0, True, "Polynomial power must be positive"),
    ("training.max_seq_length", 8, False, "Max sequence length must be at least 8 tokens"),
    ("training.max_checkpoints", 1, False, "Max checkpoints must be at least 1"),
    ("training.early_stopping_patience", 0, False, "Early-stopping patience must not be negative"),
    ("training.early_stopping_min_delta", 0, False, "Early-stopping min delta must not be negative"),
    ("training.max_grad_norm", 0, False, "Max gradient norm must not be negative (0 disables clipping)"),
    ("training.max_nonfinite_steps", 1, False, "Max non-finite steps must be at least 1"),
    ("training.loss_chunk_size", 1, False, "Loss chunk size must be at least 1"),
)


class _Findings:
    """Collects issues: ``error(fields, message)`` / ``warning(fields, message)``."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def error(self, fields: str | tuple[str, ...], message: str) -> None:
        self.issues.append(Issue((fields,) if isinstance(fields, str) else fields, message, Severity.ERROR))

    def warning(self, fields: str | tuple[str, ...], message: str) -> None:
        self.issues.append(Issue((fields,) if isinstance(fields, str) else fields, message, Severity.WARNING))


def validate_job(job: "TrainingJob", total_steps: int | None = None, devices: list[str] | None = None) -> ValidationResult:
    """Check ``job``. ``total_steps`` (when known) enables the warm-up check, ``devices`` the device check."""
    f = _Findings()
    t, lo, d = job.training, job.lora, job.data

    # A NaN or infinite number passes every range check below (NaN compares false), and then
    # trains a NaN adapter: refuse them first, naming the field.
    for key, value in _non_finite(job, ""):
        f.error(key, f"{key} must be a finite number, got {value}")

    # Required fields (spec rules).
    if not job.name.strip():
        f.error("name", "Job name is required")
    elif any(c in job.name for c in "/\\") or job.name.strip() in (".", ".."):
        f.error("name", f"Job name must not contain path separators: {job.name!r}")
    if not job.base_model_path.strip():
        f.error("base_model_path", "Base model path is required")
    elif not Path(job.base_model_path).expanduser().exists():
        f.error("base_model_path", f"Base model not found: {job.base_model_path}")
    if not job.dataset_path.strip():
        f.error("dataset_path", "Dataset path is required")
    elif not Path(job.dataset_path).expanduser().exists():
        f.error("dataset_path", f"Dataset not found: {job.dataset_path}")
    if not job.output_dir.strip():
        f.error("output_dir", "Output directory is required")
    if job.validation_path and not Path(job.validation_path).expanduser().exists():
        f.error("validation_path", f"Validation dataset not found: {job.validation_path}")
    if not 0.0 <= job.validation_split < 1.0:
        f.error("validation_split", "Validation split must be in [0, 1)")

    # Training configuration (spec rules and ours): the lower bounds, then the rules with more to them.
    for key, bound, strict, message in _LOWER_BOUNDS:
        value = getattr(t, key.removeprefix("training."))
        if not (value > bound if strict else value >= bound):
            f.error(key, message)
    if lo.rank < 1 or lo.rank > 256:
        f.error("lora.rank", "LoRA rank must be between 1 and 256")
    if not lo.alpha > 0:
        f.error("lora.alpha", "LoRA alpha must be positive")
    if not 0.0 <= lo.dropout < 1.0:
        f.error("lora.dropout", "LoRA dropout must be in [0, 1)")
    if not lo.target_modules and not (lo.apply_to_embeddings or lo.apply_to_lm_head):
        f.error("lora.target_modules", "At least one target module is required")
    if lo.apply_to_embeddings and lo.bias != LoraBias.NONE:
        f.error(("lora.bias", "lora.apply_to_embeddings"),
                "LoRA biases are not supported on embeddings; set bias to none or turn off apply_to_embeddings")
    if not lo.init_scale > 0:
        f.error("lora.init_scale", "LoRA init scale must be positive")
    if t.learning_rate > 0 and t.min_learning_rate > t.learning_rate:
        f.error("training.min_learning_rate", "Minimum learning rate must not exceed the learning rate")
    if not (0.0 <= t.adam_beta1 < 1.0 and 0.0 <= t.adam_beta2 < 1.0):
        f.error(("training.adam_beta1", "training.adam_beta2"), "Adam betas must be in [0, 1)")
    if t.nesterov and (t.optimizer != OptimizerType.SGD or t.momentum <= 0):
        f.error("training.nesterov", "Nesterov momentum needs the sgd optimizer and a positive momentum")
    if t.max_steps is not None and t.max_steps < 1:
        f.error("training.max_steps", "Max steps must be at least 1 (or left empty)")
    if t.eval_every < 0 or t.save_every < 0:
        f.error(("training.eval_every", "training.save_every"), "Evaluation and save intervals must not be negative")
    if t.dtype not in SUPPORTED_DTYPES:
        f.error("training.dtype", f"Unknown dtype {t.dtype!r}; choose one of {', '.join(SUPPORTED_DTYPES)}")
    if t.base_quantization not in BASE_QUANTIZATIONS:
        f.error("training.base_quantization",
                f"Unknown base quantization {t.base_quantization!r}; choose one of {', '.join(BASE_QUANTIZATIONS)}")
    if devices is not None and t.device != "auto" and t.device not in devices:
        f.error("training.device", f"Device {t.device!r} is not available; available: {', '.join(devices)}")
    for message in _process_errors(t, devices):
        f.error("training.processes", message)
    if d.window_overlap < 0:
        f.error("data.window_overlap", "Window overlap must not be negative")
    elif d.window_overlap > t.max_seq_length // 2:
        f.error("data.window_overlap", "Window overlap must be at most half the max sequence length; lower window_overlap")
    if d.max_file_bytes < 1:
        f.error("data.max_file_bytes", "Max file size must be at least 1 byte")
    try:
        d.column_renames()
    except ValueError as exc:
        f.error("data.column_map", str(exc))

    # Warnings (spec rules, then ours).
    if t.epochs > 20:
        f.warning("training.epochs", "More than 20 epochs may cause overfitting")
    if t.learning_rate > 1e-3:
        f.warning("training.learning_rate", "Learning rate is unusually high for fine-tuning")
    if lo.rank > 64:
        f.warning("lora.rank", "High LoRA rank (>64) increases memory usage significantly")
    if total_steps is not None and t.warmup_steps >= total_steps > 0:
        f.warning("training.warmup_steps",
                  f"Warm-up ({t.warmup_steps} steps) is not shorter than the run ({total_steps} steps): "
                  "the learning rate never reaches its peak; lower warmup_steps")
    if t.early_stopping_patience and job.validation_split == 0 and not job.validation_path:
        f.warning("training.early_stopping_patience",
                  "Early stopping needs validation data; it is off without a validation split or file")
    return ValidationResult(f.issues)


def process_limit(device: str, devices: list[str] | None) -> tuple[int, str] | None:
    """The most data-parallel processes ``device`` allows here, and what counts them ("GPUs"/"CPU cores").

    On a GPU (``device`` auto or cuda*, and ``devices`` listing ``cuda:N`` names) one process per
    GPU; otherwise the CPU's cores. None when it is unknown: ``devices`` not given and a device
    other than the CPU (the launcher then checks the GPUs itself).
    """
    gpus = sum(1 for d in devices or () if d.startswith("cuda:"))
    if gpus and (device == "auto" or device.startswith("cuda")):
        return gpus, "GPUs"
    if devices is None and device != "cpu":
        return None
    return max(1, os.cpu_count() or 1), "CPU cores"


def _process_errors(t: Any, devices: list[str] | None) -> list[str]:
    if t.processes < 1:
        return ["Processes must be at least 1 (1 trains in one process)"]
    bound = process_limit(t.device, devices)
    if bound is not None and t.processes > bound[0]:
        limit, what = bound
        return [f"Processes ({t.processes}) must be at most this machine's {limit} {what}; lower processes"]
    return []


def _non_finite(obj: Any, prefix: str) -> list[tuple[str, float]]:
    """(dotted key, value) of every float field of ``obj`` (and its nested configs) that is NaN or infinite."""
    found: list[tuple[str, float]] = []
    for fd in dataclasses.fields(obj):
        value = getattr(obj, fd.name)
        if dataclasses.is_dataclass(value):
            found.extend(_non_finite(value, f"{prefix}{fd.name}."))
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((f"{prefix}{fd.name}", value))
    return found
