"""Job configuration: defaults, every validation rule, TOML round trip and its errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from senior_intern.config import (
    DEFAULT_TARGET_MODULES,
    ConfigError,
    DataConfig,
    LoraBias,
    LoraConfig,
    OptimizerType,
    SchedulerType,
    TrainingConfig,
    TrainingJob,
    field_help,
)


@pytest.fixture
def valid_job(tmp_path: Path) -> TrainingJob:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hi"}\n')
    return TrainingJob(name="job", base_model_path=str(model), dataset_path=str(data), output_dir=str(tmp_path / "out"))


def test_defaults_follow_the_spec() -> None:
    lora, train = LoraConfig(), TrainingConfig()
    assert (lora.rank, lora.alpha, lora.dropout) == (16, 32.0, 0.05)
    assert tuple(lora.target_modules) == DEFAULT_TARGET_MODULES
    assert lora.bias is LoraBias.NONE and lora.scaling == 2.0
    assert lora.trainable_parameters(576, 192) == 16 * 576 + 192 * 16
    assert train.learning_rate == 2e-4 and train.optimizer is OptimizerType.ADAMW
    assert (train.adam_beta1, train.adam_beta2, train.adam_epsilon, train.weight_decay) == (0.9, 0.999, 1e-8, 0.01)
    assert train.lr_scheduler is SchedulerType.COSINE and train.min_learning_rate == 1e-6
    assert train.max_grad_norm == 1.0 and train.max_checkpoints == 3
    assert (train.early_stopping_patience, train.early_stopping_min_delta) == (5, 1e-4)
    # Mutable defaults are not shared between instances.
    a, b = LoraConfig(), LoraConfig()
    a.target_modules.append("x")
    assert "x" not in b.target_modules


def test_every_field_has_help() -> None:
    for cls in (LoraConfig, TrainingConfig, DataConfig, TrainingJob):
        for f in dataclasses.fields(cls):
            assert field_help(cls, f.name), f"{cls.__name__}.{f.name} has no help text"
    with pytest.raises(KeyError):
        field_help(LoraConfig, "nope")


def test_valid_job_has_no_errors(valid_job: TrainingJob) -> None:
    result = valid_job.validate()
    assert result.is_valid and result.errors == [] and result.warnings == []
    assert valid_job.run_dir == Path(valid_job.output_dir) / "job"
    assert len(valid_job.id) == 32 and valid_job.created_at


def test_required_fields() -> None:
    errors = TrainingJob().validate().errors
    assert "Job name is required" in errors
    assert "Base model path is required" in errors
    assert "Dataset path is required" in errors
    assert "Output directory is required" in errors


def test_missing_paths_are_named(valid_job: TrainingJob, tmp_path: Path) -> None:
    valid_job.base_model_path = str(tmp_path / "nope.gguf")
    valid_job.dataset_path = str(tmp_path / "nope.jsonl")
    valid_job.validation_path = str(tmp_path / "val.jsonl")
    errors = valid_job.validate().errors
    assert f"Base model not found: {tmp_path / 'nope.gguf'}" in errors
    assert f"Dataset not found: {tmp_path / 'nope.jsonl'}" in errors
    assert f"Validation dataset not found: {tmp_path / 'val.jsonl'}" in errors


def test_a_folder_is_a_valid_dataset_and_model(valid_job: TrainingJob, tmp_path: Path) -> None:
    valid_job.dataset_path = str(tmp_path)
    valid_job.base_model_path = str(tmp_path)
    assert valid_job.validate().is_valid


ERROR_CASES = [
    ("training", "epochs", 0, "Epochs must be at least 1"),
    ("training", "batch_size", 0, "Batch size must be at least 1"),
    ("training", "learning_rate", 0.0, "Learning rate must be positive"),
    ("training", "learning_rate", -1e-4, "Learning rate must be positive"),
    ("lora", "rank", 0, "LoRA rank must be between 1 and 256"),
    ("lora", "rank", 257, "LoRA rank must be between 1 and 256"),
    ("lora", "alpha", 0.0, "LoRA alpha must be positive"),
    ("lora", "dropout", 1.0, "LoRA dropout must be in [0, 1)"),
    ("lora", "dropout", -0.1, "LoRA dropout must be in [0, 1)"),
    ("lora", "target_modules", [], "At least one target module is required"),
    ("lora", "init_scale", 0.0, "LoRA init scale must be positive"),
    ("training", "gradient_accumulation_steps", 0, "Gradient accumulation steps must be at least 1"),
    ("training", "warmup_steps", -1, "Warm-up steps must not be negative"),
    ("training", "weight_decay", -0.1, "Weight decay must not be negative"),
    ("training", "min_learning_rate", -1.0, "Minimum learning rate must not be negative"),
    ("training", "min_learning_rate", 1.0, "Minimum learning rate must not exceed the learning rate"),
    ("training", "adam_beta1", 1.0, "Adam betas must be in [0, 1)"),
    ("training", "adam_epsilon", 0.0, "Epsilon must be positive"),
    ("training", "momentum", -0.5, "Momentum must not be negative"),
    ("training", "nesterov", True, "Nesterov momentum needs the sgd optimizer and a positive momentum"),
    ("training", "num_cycles", 0, "Number of cycles must be at least 1"),
    ("training", "cycle_multiplier", 0, "Cycle multiplier must be at least 1"),
    ("training", "polynomial_power", 0.0, "Polynomial power must be positive"),
    ("training", "max_seq_length", 4, "Max sequence length must be at least 8 tokens"),
    ("training", "max_steps", 0, "Max steps must be at least 1 (or left empty)"),
    ("training", "eval_every", -1, "Evaluation and save intervals must not be negative"),
    ("training", "max_checkpoints", 0, "Max checkpoints must be at least 1"),
    ("training", "early_stopping_patience", -1, "Early-stopping patience must not be negative"),
    ("training", "early_stopping_min_delta", -1.0, "Early-stopping min delta must not be negative"),
    ("training", "max_grad_norm", -1.0, "Max gradient norm must not be negative (0 disables clipping)"),
    ("training", "max_nonfinite_steps", 0, "Max non-finite steps must be at least 1"),
    ("training", "loss_chunk_size", 0, "Loss chunk size must be at least 1"),
    ("training", "dtype", "float64", "Unknown dtype 'float64'; choose one of auto, float32, bfloat16, float16"),
    ("data", "window_overlap", -1, "Window overlap must not be negative"),
    ("data", "window_overlap", 257, "Window overlap must be at most half the max sequence length; lower window_overlap"),
    ("data", "max_file_bytes", 0, "Max file size must be at least 1 byte"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), ERROR_CASES)
def test_each_error_rule(valid_job: TrainingJob, section: str, key: str, value: object, message: str) -> None:
    setattr(getattr(valid_job, section), key, value)
    result = valid_job.validate()
    assert not result.is_valid
    assert message in result.errors


def test_bias_with_embeddings_is_refused(valid_job: TrainingJob) -> None:
    valid_job.lora.apply_to_embeddings, valid_job.lora.bias = True, LoraBias.ALL
    assert "LoRA biases are not supported on embeddings; set bias to none or turn off apply_to_embeddings" in valid_job.validate().errors


def test_job_level_errors(valid_job: TrainingJob) -> None:
    valid_job.validation_split = 1.0
    assert "Validation split must be in [0, 1)" in valid_job.validate().errors
    valid_job.validation_split = 0.1
    valid_job.name = "../evil"
    assert any("path separators" in e for e in valid_job.validate().errors)


def test_device_must_be_available(valid_job: TrainingJob) -> None:
    valid_job.training.device = "cuda"
    errors = valid_job.validate(available_devices=["cpu"]).errors
    assert errors == ["Device 'cuda' is not available; available: cpu"]
    valid_job.training.device = "auto"
    assert valid_job.validate(available_devices=["cpu"]).is_valid


WARNING_CASES = [
    ("training", "epochs", 21, "More than 20 epochs may cause overfitting"),
    ("training", "learning_rate", 2e-3, "Learning rate is unusually high for fine-tuning"),
    ("lora", "rank", 65, "High LoRA rank (>64) increases memory usage significantly"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), WARNING_CASES)
def test_each_warning_rule(valid_job: TrainingJob, section: str, key: str, value: object, message: str) -> None:
    setattr(getattr(valid_job, section), key, value)
    result = valid_job.validate()
    assert result.is_valid, result.errors
    assert result.warnings == [message]


def test_warmup_longer_than_run_warns(valid_job: TrainingJob) -> None:
    valid_job.training.warmup_steps = 100
    assert valid_job.validate(total_steps=101).warnings == []
    warnings = valid_job.validate(total_steps=30).warnings
    assert len(warnings) == 1 and "lower warmup_steps" in warnings[0]


def test_early_stopping_without_validation_warns(valid_job: TrainingJob) -> None:
    valid_job.validation_split = 0.0
    assert any("Early stopping needs validation data" in w for w in valid_job.validate().warnings)
    valid_job.training.early_stopping_patience = 0
    assert valid_job.validate().warnings == []


def test_toml_round_trip(valid_job: TrainingJob, tmp_path: Path) -> None:
    valid_job.lora.rank = 8
    valid_job.lora.bias = LoraBias.LORA_ONLY
    valid_job.training.lr_scheduler = SchedulerType.POLYNOMIAL
    valid_job.training.max_steps = 50
    valid_job.tags = {"project": "demo"}
    path = valid_job.save(tmp_path / "sub" / "job.toml")
    loaded = TrainingJob.load(path)
    assert loaded == valid_job
    assert loaded.lora.bias is LoraBias.LORA_ONLY
    assert isinstance(loaded.training.learning_rate, float)
    assert not list(path.parent.glob("*.tmp"))


def test_toml_integers_are_accepted_for_floats(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('name = "x"\n[training]\nlearning_rate = 1\n')
    assert TrainingJob.load(path).training.learning_rate == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('nmae = "x"\n', "unknown key nmae"),
        ('[training]\nepochz = 3\n', "unknown key training.epochz"),
        ('[training]\nepochs = "three"\n', "training.epochs: expected an integer, got 'three'"),
        ('[training]\nepochs = 2.5\n', "training.epochs: expected an integer"),
        ('[training]\npacking = 1\n', "training.packing: expected true or false"),
        ('[lora]\nbias = "some"\n', "lora.bias: 'some' is not one of 'none', 'lora_only', 'all'"),
        ('[lora]\ntarget_modules = "q_proj"\n', "lora.target_modules: expected a list"),
        ('[lora]\ntarget_modules = [1]\n', "lora.target_modules[0]: expected a string"),
        ('lora = 3\n', "lora: expected a table [lora]"),
        ('[tags]\nx = 1\n', "tags.x: expected a string"),
        ('tags = 1\n', "tags: expected a table"),
        ("name = \n", "not a valid TOML file"),
    ],
)
def test_toml_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TrainingJob.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Job file not found"):
        TrainingJob.load(tmp_path / "none.toml")


def test_optional_field_round_trips_none(tmp_path: Path) -> None:
    job = TrainingJob(name="x")
    assert "max_steps" not in job.to_dict()["training"]
    data = job.to_dict()
    data["training"]["max_steps"] = 7
    assert TrainingJob.from_dict(data).training.max_steps == 7


def test_a_minimum_learning_rate_above_the_rate_is_refused_whatever_else_is_set(valid_job):
    valid_job.training.learning_rate, valid_job.training.min_learning_rate = 1e-4, 1e-3
    valid_job.lora.init_scale = 0.0  # another error must not hide this one
    errors = valid_job.validate().errors
    assert "Minimum learning rate must not exceed the learning rate" in errors
    assert "LoRA init scale must be positive" in errors


def test_processes_are_bounded_by_the_gpus_or_the_cores(valid_job: TrainingJob, monkeypatch) -> None:
    t = valid_job.training
    assert t.processes == 1
    t.processes = 0
    assert "Processes must be at least 1 (1 trains in one process)" in valid_job.validate().errors
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    t.device, t.processes = "cpu", 4
    assert valid_job.validate().is_valid
    t.processes = 5
    assert "Processes (5) must be at most this machine's 4 CPU cores; lower processes" in valid_job.validate().errors
    t.device = "auto"  # GPUs unknown: the launcher checks them
    assert valid_job.validate().is_valid
    gpus = ["cuda", "cuda:0", "cuda:1", "cpu"]
    assert "Processes (5) must be at most this machine's 2 GPUs; lower processes" in valid_job.validate(available_devices=gpus).errors
    t.processes = 2
    assert valid_job.validate(available_devices=gpus).is_valid
    t.device, t.processes = "cpu", 3  # CPU processes on a GPU machine: the cores count
    assert valid_job.validate(available_devices=gpus).is_valid
    t.device, t.processes = "auto", 5  # auto on a machine without GPUs: the cores count
    assert "Processes (5) must be at most this machine's 4 CPU cores; lower processes" in valid_job.validate(available_devices=["cpu"]).errors
