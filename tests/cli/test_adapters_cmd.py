"""``senior-intern adapters ...`` on adapters made by the engine."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import pytest
from transformers import AutoModelForCausalLM

from senior_intern.cli import main
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer
from tests.conftest import write_dataset, write_tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("cli-lib")
    model = write_tiny_model(root / "model")
    job = TrainingJob(name="cli adapter", base_model_path=str(model), dataset_path=str(write_dataset(root / "d.jsonl", 16)),
                      output_dir=str(root / "runs"), adapters_dir=str(root / "lib"), validation_split=0.0)
    t = job.training
    t.epochs, t.max_seq_length, t.device, t.dtype, t.eval_every, t.save_every, t.warmup_steps = 1, 64, "cpu", "float32", 0, 0, 0
    job.lora.rank, job.lora.alpha = 4, 8.0
    result = Trainer().run(job)
    assert result.success
    return root / "lib", result.adapter_id, model


def lib_args(lib: Path, *args: str) -> list[str]:
    return ["adapters", "--library", str(lib), *args]


def test_list_show_rename_describe(trained, capsys) -> None:
    lib, adapter_id, model = trained
    assert main(lib_args(lib, "list")) == 0
    assert adapter_id in capsys.readouterr().out
    assert main(lib_args(lib, "rename", adapter_id, "Renamed")) == 0
    assert main(lib_args(lib, "describe", adapter_id, "A description")) == 0
    capsys.readouterr()
    assert main(lib_args(lib, "show", adapter_id)) == 0
    out = capsys.readouterr().out
    assert "name: Renamed" in out and "description: A description" in out and f"base_model: {model}" in out
    assert main(lib_args(lib, "rename", adapter_id, "../evil")) == 2
    assert "Invalid adapter name" in capsys.readouterr().err
    assert main(lib_args(lib, "show", "../etc")) == 2


def test_export_gguf_merge_try_import_delete(trained, tmp_path: Path, capsys) -> None:
    lib, adapter_id, model = trained
    out = tmp_path / "a.gguf"
    assert main(lib_args(lib, "export-gguf", adapter_id, "-o", str(out), "--dtype", "f32")) == 0
    reader = gguf.GGUFReader(str(out))
    assert any(t.name == "blk.0.attn_q.weight.lora_a" for t in reader.tensors)
    merged = tmp_path / "merged"
    assert main(lib_args(lib, "merge", adapter_id, "-o", str(merged))) == 0
    assert "convert_hf_to_gguf.py" in capsys.readouterr().out
    assert AutoModelForCausalLM.from_pretrained(merged).config.hidden_size == 64
    assert main(lib_args(lib, "try", adapter_id, "def add", "--max-new-tokens", "3")) == 0
    out_text = capsys.readouterr().out
    assert "--- base:" in out_text and "--- adapter:" in out_text
    exported = tmp_path / "copy"
    from senior_intern.adapters.library import AdapterLibrary

    AdapterLibrary(lib).export(adapter_id, exported)
    assert main(lib_args(lib, "import", str(exported), "--name", "Imported")) == 0
    imported_id = capsys.readouterr().out.split("Imported as ")[1].strip()
    assert main(lib_args(lib, "delete", imported_id)) == 0
    assert not (lib / imported_id).exists() and (lib / adapter_id).is_dir()
    assert main(lib_args(lib, "export-gguf", adapter_id, "--base", str(tmp_path / "none.gguf"))) == 2
    assert "Base model not found" in capsys.readouterr().err


def test_empty_library(tmp_path: Path, capsys) -> None:
    assert main(lib_args(tmp_path / "empty", "list")) == 0
    assert "No adapters in" in capsys.readouterr().out


def test_export_merged_gguf_and_ollama(trained, tmp_path: Path, capsys) -> None:
    from tests.adapters.test_gguf_merge import write_tiny_llama_gguf

    lib, adapter_id, model = trained
    base = write_tiny_llama_gguf(tmp_path / "base.gguf", AutoModelForCausalLM.from_pretrained(model))
    out = tmp_path / "out" / "merged.gguf"
    args = lib_args(lib, "export-merged-gguf", adapter_id, "--base", str(base), "-o", str(out), "--type", "q8_0", "--ollama")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "tensors merged" in captured.out and re.search(r"ollama create [a-z0-9._-]+ -f Modelfile", captured.out)
    assert "[" in captured.err and "/" in captured.err  # progress
    modelfile = (out.parent / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./merged.gguf\n") and "<|im_start|>assistant" in modelfile
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    capsys.readouterr()
    adapter_out = tmp_path / "ad" / "a.gguf"
    assert main(lib_args(lib, "export-gguf", adapter_id, "--base", str(base), "-o", str(adapter_out), "--ollama")) == 0
    lines = (adapter_out.parent / "Modelfile").read_text().splitlines()
    assert lines[:2] == [f"FROM {base.resolve()}", "ADAPTER ./a.gguf"]
