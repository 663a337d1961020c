"""The job: dataclasses and TOML load/save (its validation rules are in ``validation.py``).

One source of truth for a training job. Every field carries its help text in
``field(metadata={"help": ...})`` so the command line and the GUI tooltips read the same words.
The defaults follow the engine spec (rank 16, alpha 32, dropout 0.05, the seven Llama
projection modules, AdamW at 2e-4, cosine schedule with warm-up, min lr 1e-6, ...).

Nothing here imports torch: the GUI can build and validate a job before the engine loads.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import tomllib
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

from senior_intern import paths

if typing.TYPE_CHECKING:
    from senior_intern.validation import ValidationResult

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALL_LINEAR = "all-linear"


class ConfigError(ValueError):
    """A job file or job value the user must fix; the message names the key."""


class LoraBias(enum.StrEnum):
    """Which biases train: none, only the LoRA B bias, or all biases (base + LoRA)."""

    NONE = "none"
    LORA_ONLY = "lora_only"
    ALL = "all"


class LoraInit(enum.StrEnum):
    """Initialisation of the LoRA A matrix (B always starts at zero, except ``zeros``: both)."""

    KAIMING_UNIFORM = "kaiming_uniform"
    GAUSSIAN = "gaussian"
    ZEROS = "zeros"


class OptimizerType(enum.StrEnum):
    """Optimisers the engine can build over the LoRA parameters."""

    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"
    RMSPROP = "rmsprop"


class SchedulerType(enum.StrEnum):
    """Learning-rate schedules; every one starts with the configured linear warm-up."""

    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"


class DatasetFormat(enum.StrEnum):
    """Dataset layouts; ``auto`` detects the format from the data."""

    AUTO = "auto"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"
    CHAT = "chat"
    TEXT = "text"
    CODE = "code"


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (mutable defaults become factories)."""
    meta = {"help": help, **kw}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class LoraConfig:
    """Low-rank adaptation settings: which layers get adapters and how they start."""

    rank: int = _f(16, "Rank r of the low-rank matrices A [r, in] and B [out, r]. Higher is more expressive and slower (8, 16, 32, 64 are common).")
    alpha: float = _f(32.0, "Scaling numerator: the LoRA output is scaled by alpha / rank (typically 2 x rank).")
    dropout: float = _f(0.05, "Dropout on the LoRA input during training, in [0, 1).")
    target_modules: list[str] = _f(list(DEFAULT_TARGET_MODULES), "Linear layers to adapt, by name (q_proj, ..., down_proj), by dotted suffix, or 'all-linear'.")
    bias: LoraBias = _f(LoraBias.NONE, "Trainable biases: none, lora_only (a bias on LoRA B) or all (base biases too).")
    apply_to_embeddings: bool = _f(False, "Also adapt the token embedding layer.")
    apply_to_lm_head: bool = _f(False, "Also adapt the language-model head.")
    init_method: LoraInit = _f(LoraInit.KAIMING_UNIFORM, "Initialisation of A: kaiming_uniform, gaussian (std 1/r) or zeros.")
    init_scale: float = _f(1.0, "Multiplier applied to the initial A values.")

    @property
    def scaling(self) -> float:
        """alpha / rank: the factor applied to B A x."""
        return self.alpha / self.rank

    def trainable_parameters(self, in_features: int, out_features: int) -> int:
        """Trainable parameters one adapted [out, in] linear layer adds: r*in + out*r."""
        return self.rank * in_features + out_features * self.rank


@dataclass
class TrainingConfig:
    """Optimisation settings of a run."""

    epochs: int = _f(3, "Passes over the training data.")
    batch_size: int = _f(4, "Sequences per micro-batch.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step (effective batch = batch_size x this).")
    learning_rate: float = _f(2e-4, "Peak learning rate, reached at the end of warm-up.")
    weight_decay: float = _f(0.01, "Weight decay (decoupled for AdamW).")
    optimizer: OptimizerType = _f(OptimizerType.ADAMW, "Optimizer: adamw, adam, sgd or rmsprop.")
    adam_beta1: float = _f(0.9, "Adam/AdamW beta1.")
    adam_beta2: float = _f(0.999, "Adam/AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "Epsilon for numerical stability (Adam, AdamW, RMSprop).")
    momentum: float = _f(0.9, "Momentum for SGD and RMSprop.")
    nesterov: bool = _f(False, "Nesterov momentum for SGD.")
    rmsprop_alpha: float = _f(0.99, "Smoothing constant for RMSprop.")
    lr_scheduler: SchedulerType = _f(SchedulerType.COSINE, "Schedule after warm-up: cosine, linear, constant, cosine_with_restarts or polynomial.")
    warmup_steps: int = _f(100, "Optimizer steps of linear warm-up from 0 to the learning rate.")
    min_learning_rate: float = _f(1e-6, "Learning rate at the end of the schedule (cosine, linear, restarts, polynomial).")
    num_cycles: int = _f(1, "Cycles for cosine_with_restarts.")
    cycle_multiplier: int = _f(2, "Each restart cycle is this many times longer than the previous one.")
    polynomial_power: float = _f(1.0, "Power of the polynomial decay.")
    max_seq_length: int = _f(512, "Longest sequence in tokens; longer samples are truncated (and counted).")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (overrides epochs when reached first).")
    eval_every: int = _f(100, "Evaluate on the validation set every N optimizer steps (0: only at epoch ends).")
    save_every: int = _f(100, "Save a resumable checkpoint every N optimizer steps (0: only at epoch ends).")
    max_checkpoints: int = _f(3, "Newest checkpoints to keep (the best one is always kept too).")
    early_stopping_patience: int = _f(5, "Stop after this many evaluations without improvement (0 disables early stopping).")
    early_stopping_min_delta: float = _f(1e-4, "Smallest drop in validation loss that counts as an improvement.")
    max_grad_norm: float = _f(1.0, "Clip the global gradient norm to this value (0 disables clipping).")
    max_nonfinite_steps: int = _f(5, "Fail the run after this many optimizer steps in a row with a NaN/Inf loss or gradient.")
    seed: int = _f(42, "Random seed for LoRA init, dropout, shuffling and the validation split.")
    device: str = _f("auto", "Where to train: auto, cpu, cuda, cuda:N or mps.")
    processes: int = _f(1, "Data-parallel worker processes on this machine (torch.distributed.run): one per GPU on a GPU machine (at most the number of GPUs), or CPU processes sharing the cores (at most the number of cores). Global batch = batch_size x processes x gradient_accumulation_steps. 1 trains in one process.")
    dtype: str = _f("auto", "Compute dtype of the base model: auto, float32, bfloat16 or float16.")
    base_quantization: str = _f("none", "How a Hugging Face folder's frozen linear weights are held while training: none (as loaded), int8 or int4 (weight-only, quantised at load; less memory, slightly different numbers) or auto (by this machine's memory). A GGUF base always stays in its own blocks.")
    packing: bool = _f(True, "Pack several samples into each full-length row (no attention across samples) instead of padding.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory (slower).")
    loss_chunk_size: int = _f(1024, "Tokens per chunk of the vocabulary projection in the loss (bounds logits memory).")


@dataclass
class DataConfig:
    """How the dataset is read."""

    format: DatasetFormat = _f(DatasetFormat.AUTO, "Dataset format: auto, alpaca, prompt_completion, chat, text or code.")
    code_extensions: list[str] = _f([], "For a folder of code: only files with these extensions (e.g. .py .rs); empty means all known source files.")
    window_overlap: int = _f(32, "Tokens shared by consecutive windows when a long file is split (at most half the max sequence length).")
    max_file_bytes: int = _f(1_000_000, "Files larger than this are skipped when reading a folder of code.")
    skip_malformed: bool = _f(False, "Skip malformed records (counted and reported) instead of failing the load.")
    column_map: list[str] = _f([], "Rename record fields before the format is recognised, as FROM=TO pairs "
                                   "(e.g. question=prompt answer=completion).")

    def column_renames(self) -> dict[str, str]:
        """``column_map`` as {record field: the field it is read as}; ValueError naming a bad pair."""
        renames: dict[str, str] = {}
        for pair in self.column_map:
            source, sep, target = (part.strip() for part in pair.partition("="))
            if not sep or not source or not target:
                raise ValueError(f"data.column_map entry {pair!r} is not FROM=TO (e.g. question=prompt)")
            if target not in RECORD_FIELDS:
                raise ValueError(f"data.column_map entry {pair!r}: {target!r} is not a field the formats read; "
                                 f"use one of {', '.join(RECORD_FIELDS)}")
            if source in renames:
                raise ValueError(f"data.column_map renames {source!r} twice")
            renames[source] = target
        targets = list(renames.values())
        if len(set(targets)) != len(targets):
            raise ValueError(f"data.column_map maps two fields to the same name: {', '.join(self.column_map)}")
        return renames


# The record fields the dataset formats read (``data/sources.FORMAT_FIELDS`` and the templates).
RECORD_FIELDS = ("instruction", "input", "output", "prompt", "completion", "messages", "conversations", "text", "system")
SUPPORTED_DTYPES = ("auto", "float32", "bfloat16", "float16")
BASE_QUANTIZATIONS = ("none", "int8", "int4", "auto")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class TrainingJob:
    """A training job: what to train, on what, where to write it, and how."""

    name: str = _f("", "Name of the job; also names the run folder and the adapter.")
    base_model_path: str = _f("", "Base model: a Hugging Face model folder or a .gguf file.")
    dataset_path: str = _f("", "Training data: a .jsonl/.json/.txt/.md file or a folder of source code.")
    output_dir: str = _f("", "Folder for runs; the run goes to <output_dir>/<name>/.")
    description: str = _f("", "Optional description, kept with the adapter.")
    validation_path: str | None = _f(None, "Optional separate validation file (otherwise validation_split is used).")
    validation_split: float = _f(0.1, "Fraction of the training data held out for validation when no validation file is given (0 for none).")
    adapters_dir: str = _f("", "Adapter library folder the final adapter is saved into (empty: the default library).")
    id: str = _f("", "Unique id of the job (filled in automatically).")
    created_at: str = _f("", "When the job was created, ISO 8601 (filled in automatically).")
    tags: dict[str, str] = _f({}, "Free-form key/value tags kept with the adapter.")
    lora: LoraConfig = _f(LoraConfig, "LoRA settings.")
    training: TrainingConfig = _f(TrainingConfig, "Training settings.")
    data: DataConfig = _f(DataConfig, "Dataset settings.")

    def __post_init__(self) -> None:
        if not self.id:
            self.id = uuid.uuid4().hex
        if not self.created_at:
            self.created_at = _now()

    @property
    def run_dir(self) -> Path:
        """Folder of this job's run: ``<output_dir>/<name>``."""
        return Path(self.output_dir or paths.runs_dir()) / self.name

    def validate(self, total_steps: int | None = None, available_devices: list[str] | None = None) -> "ValidationResult":
        """Check the job; errors and warnings follow the spec's rules plus a few it missed.

        ``total_steps`` (when known, e.g. after the dataset was counted) enables the check that
        warm-up is shorter than the run; ``available_devices`` enables the device check.
        """
        from senior_intern.validation import validate_job

        return validate_job(self, total_steps, available_devices)

    # --- TOML ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (enums as strings, ``None`` omitted), as written to ``job.toml``."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingJob":
        """Build a job from a dict; an unknown key or a wrong type raises ``ConfigError`` naming it."""
        return _from_plain(cls, data, "")

    def save(self, path: str | Path) -> Path:
        """Write the job as TOML (atomically) and return the path."""
        from senior_intern.layout import write_text_atomic

        return write_text_atomic(path, tomli_w.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "TrainingJob":
        """Read a job from a TOML file; errors name the file and the key to fix."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Job file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid TOML file: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def field_help(cls: type, name: str) -> str:
    """Help text of a config field (for CLI help and GUI tooltips)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


# --- plain dict <-> dataclass ----------------------------------------------------------------

def to_plain(obj: Any, omit_none: bool = True) -> Any:
    """``obj`` as plain values (TOML, JSON): dataclasses as dicts of their fields, enums as their
    value, tuples as lists; ``omit_none`` leaves out fields that are None (TOML has no null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = to_plain(getattr(obj, f.name), omit_none)
            if value is not None or not omit_none:
                out[f.name] = value
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, omit_none) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v, omit_none) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return "one of " + ", ".join(repr(m.value) for m in tp)
        return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(tp.__name__, tp.__name__)
    return str(tp)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of key = value, got {value!r}")
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table [{key}], got {value!r}")
        return _from_plain(tp, value, key + ".")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _from_plain(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known keys: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    return cls(**kwargs)
