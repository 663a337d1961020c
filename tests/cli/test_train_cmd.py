"""``senior-intern train | resume | validate`` on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from senior_intern.cli import main
from senior_intern.config import TrainingJob
from tests.conftest import write_dataset


def _args(tiny_model_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "train", "--model", str(tiny_model_dir), "--data", str(write_dataset(tmp_path / "d.jsonl")),
        "--output", str(tmp_path / "runs"), "--adapters-dir", str(tmp_path / "lib"), "--name", "cli",
        "--epochs", "1", "--batch-size", "4", "--max-seq-length", "64", "--rank", "4", "--alpha", "8",
        "--learning-rate", "5e-3", "--warmup-steps", "1", "--device", "cpu", "--dtype", "float32",
        "--no-packing", "--eval-every", "0", "--save-every", "3", "--target-modules", "q_proj", "v_proj", *extra,
    ]


def test_train_prints_a_summary_and_saves_the_adapter(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(_args(tiny_model_dir, tmp_path, "--save-config", str(tmp_path / "job.toml"))) == 0
    out = capsys.readouterr().out
    assert "Status: Completed" in out and "Adapter: cli-" in out
    adapter = next((tmp_path / "lib").iterdir())
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"] and config["r"] == 4
    job = TrainingJob.load(tmp_path / "job.toml")
    assert job.training.learning_rate == 5e-3 and job.training.packing is False and job.lora.target_modules == ["q_proj", "v_proj"]


def test_validate_reports_errors_and_warnings(tmp_path: Path, capsys) -> None:
    job = TrainingJob(name="x", base_model_path=str(tmp_path), dataset_path=str(tmp_path), output_dir=str(tmp_path))
    job.training.learning_rate = 5e-3
    job.save(tmp_path / "ok.toml")
    assert main(["validate", str(tmp_path / "ok.toml")]) == 0
    assert "valid (1 warnings)" in capsys.readouterr().out
    job.training.epochs = 0
    job.save(tmp_path / "bad.toml")
    assert main(["validate", str(tmp_path / "bad.toml")]) == 1
    assert "error: Epochs must be at least 1" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path / "none.toml")]) == 2
    assert "Job file not found" in capsys.readouterr().err
    assert main(["train", "--model", str(tmp_path / "nope.gguf"), "--data", str(tmp_path)]) == 2
    assert "Base model not found" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_ctrl_c_cancels_cleanly_and_the_run_resumes(tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import signal

    from senior_intern.cli import train_cmd
    from senior_intern.training.events import Progress

    original = train_cmd.ConsoleReporter.__call__

    def reporter(self, event):  # a real SIGINT, as Ctrl-C sends, after step 2
        original(self, event)
        if isinstance(event, Progress) and event.global_step == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_cmd.ConsoleReporter, "__call__", reporter)
    assert main(_args(tiny_model_dir, tmp_path)) == 130
    captured = capsys.readouterr()
    assert "Cancelling" in captured.err
    assert "Status: Cancelled" in captured.out and "Resume with: senior-intern resume" in captured.out
    assert getattr(signal.getsignal(signal.SIGINT), '__name__', '') != 'on_sigint'  # handler restored
    monkeypatch.setattr(train_cmd.ConsoleReporter, "__call__", original)
    checkpoint = captured.out.split("Resume with: senior-intern resume ")[1].strip()
    assert main(["resume", checkpoint]) == 0
    assert "Status: Completed" in capsys.readouterr().out
