"""End to end on the real demo model: training on code lowers the validation loss, and the saved
adapter gives, in the real PEFT library on the same base, the loss the engine reported."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from senior_intern.config import TrainingJob
from senior_intern.data import BatchLoader, load_training_data, model_inputs
from senior_intern.models import load_base_model
from senior_intern.training.engine import Trainer
from senior_intern.training.events import TrainingStatus
from senior_intern.training.plan import pad_token_id

pytestmark = pytest.mark.slow


def _code_folder(dest: Path) -> Path:
    """Real source code: a few modules of Python's own standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest.mkdir()
    for name in ("colorsys.py", "bisect.py", "keyword.py", "heapq.py", "textwrap.py", "shlex.py"):
        shutil.copy(stdlib / name, dest / name)
    (dest / ".gitignore").write_text("build/\n")
    return dest


def _validation_loss(model, samples, pad_id) -> float:
    """Token-weighted mean validation loss through a model's own forward (full logits)."""
    loader = BatchLoader(samples, 2, pad_id=pad_id, max_seq_length=128, packing=False, shuffle=False, seed=0)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(**model_inputs(batch, torch.float32)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], batch.labels[:, 1:]
            total += torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((shift_labels != -100).sum())
    return total / count


def test_demo_model_learns_code_and_peft_agrees(demo_gguf: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    job = TrainingJob(
        name="e2e",
        base_model_path=str(demo_gguf),
        dataset_path=str(_code_folder(tmp_path / "code")),
        output_dir=str(tmp_path / "runs"),
        adapters_dir=str(tmp_path / "adapters"),
        validation_split=0.15,
    )
    t = job.training
    t.epochs, t.max_steps, t.batch_size, t.max_seq_length = 1, 10, 2, 128
    t.learning_rate, t.warmup_steps, t.eval_every, t.save_every = 2e-3, 2, 0, 0
    t.device, t.dtype, t.packing, t.early_stopping_patience = "cpu", "float32", False, 0
    job.lora.rank, job.lora.alpha, job.lora.dropout = 8, 16.0, 0.0

    base = load_base_model(str(demo_gguf), dtype="float32")
    data = load_training_data(job, base.tokenizer)
    pad_id = pad_token_id(base.tokenizer)
    before = _validation_loss(base.model, data.validation, pad_id)

    result = Trainer().run(job)
    assert result.status is TrainingStatus.COMPLETED, result.error_message
    assert result.final_validation_loss < before - 0.05, (before, result.final_validation_loss)

    peft_model = PeftModel.from_pretrained(base.model, result.adapter_path).eval()
    peft_loss = _validation_loss(peft_model, data.validation, pad_id)
    assert peft_loss == pytest.approx(result.final_validation_loss, abs=1e-4)
