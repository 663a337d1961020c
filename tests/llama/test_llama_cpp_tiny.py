"""Tiny Llama and Qwen2 bases in F32, where llama.cpp must agree with PyTorch almost exactly.

Llama's q/k rows are permuted by the GGUF conversion and Qwen2's are not, so each family
checks the other's mistake: a permutation applied to Qwen2 (or missing for Llama) changes the
base logits or the adapter's. With F32 weights both sides compute the same function, so the
tolerances are tight (1e-3 of the logits' spread), not the demo's quantisation-sized ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: run `make test-llama` to build it into .venv-llama")

from senior_intern.adapters.gguf import export_gguf  # noqa: E402
from senior_intern.adapters.gguf_merge import export_merged_gguf  # noqa: E402
from tests.adapters.conftest import ALL_PROJECTIONS, save_peft_adapter  # noqa: E402
from tests.llama.conftest import (  # noqa: E402
    llama_greedy,
    llama_logits,
    make_tiny_hf,
    torch_greedy,
    train_phrase,
    write_tiny_gguf,
)

pytestmark = [pytest.mark.llama_cpp]
IDS = [1, 50, 201, 28, 94, 30, 118, 17, 200, 34, 7, 281]
FAMILIES = [("llama", False), ("qwen2", True)]  # untied Llama: its lm_head LoRA is output.weight


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-9))


@pytest.mark.parametrize(("family", "tied"), FAMILIES)
def test_tiny_base_adapter_and_merged_file_match_pytorch(family: str, tied: bool, tmp_path: Path) -> None:
    model = make_tiny_hf(family, tied=tied)
    base = write_tiny_gguf(model, tmp_path / "base.gguf")
    with torch.no_grad():
        base_torch = model(torch.tensor([IDS])).logits[0].numpy()
    base_llama = llama_logits(base, IDS)
    rel = _close(base_llama, base_torch)
    print(f"{family} base: max |llama.cpp - torch| {rel:.2e} of the logits' range")
    assert rel < 1e-3

    targets = list(ALL_PROJECTIONS) + ([] if tied else ["lm_head"])
    peft_model = save_peft_adapter(model, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=targets,
                                   save_embedding_layers=False)
    with torch.no_grad():
        adapted_torch = peft_model(torch.tensor([IDS])).logits[0].numpy()
    delta_torch = adapted_torch - base_torch
    assert np.abs(delta_torch).max() > 0.05 * np.abs(base_torch).max()  # the adapter changes the output visibly

    adapter = export_gguf(tmp_path / "adapter", base, tmp_path / "adapter.gguf", dtype="f32")
    with_lora = llama_logits(base, IDS, lora=adapter)
    rel_delta = _close(with_lora - base_llama, delta_torch)
    print(f"{family} --lora: max delta difference {rel_delta:.2e} of the delta")
    assert rel_delta < 1e-3
    assert (with_lora.argmax(-1) == adapted_torch.argmax(-1)).all()

    merged = export_merged_gguf(tmp_path / "adapter", base, tmp_path / "merged.gguf", qtype="same")
    assert set(merged.merged.values()) == {"F32"}  # 'same' keeps the base's F32
    merged_llama = llama_logits(merged.path, IDS)
    rel_merged = _close(merged_llama - base_llama, delta_torch)
    print(f"{family} merged: max delta difference {rel_merged:.2e} of the delta")
    assert rel_merged < 1e-3
    assert (merged_llama.argmax(-1) == adapted_torch.argmax(-1)).all()


@pytest.mark.parametrize(("family", "tied"), FAMILIES)
def test_tiny_trained_phrase_is_said_by_llama_cpp_with_lora_and_merged(family: str, tied: bool, tmp_path: Path) -> None:
    import peft

    model = make_tiny_hf(family, seed=3, tied=tied)
    base = write_tiny_gguf(model, tmp_path / "base.gguf")
    prompt, phrase = IDS[:6], [250, 110, 61, 47, 290, 2]
    before = llama_greedy(base, prompt, len(phrase))
    assert before != phrase
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(ALL_PROJECTIONS))
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(model, config)
    loss = train_phrase(peft_model, prompt, phrase, steps=150, lr=1e-2)
    assert torch_greedy(peft_model, prompt, len(phrase)) == phrase, f"training did not fit the phrase (loss {loss:.3f})"
    peft_model.save_pretrained(tmp_path / "adapter")

    adapter = export_gguf(tmp_path / "adapter", base, tmp_path / "adapter.gguf", dtype="f16")
    assert llama_greedy(base, prompt, len(phrase), lora=adapter) == phrase
    merged = export_merged_gguf(tmp_path / "adapter", base, tmp_path / "merged.gguf", qtype="q8_0").path
    assert llama_greedy(merged, prompt, len(phrase)) == phrase


def test_merged_gguf_from_an_hf_folder_runs_in_llama_cpp_with_the_same_tokens(tmp_path: Path) -> None:
    import llama_cpp

    from tests.conftest import TINY_CORPUS, make_tiny_llama, make_tiny_tokenizer

    folder = tmp_path / "base"
    make_tiny_llama().save_pretrained(folder)
    tokenizer = make_tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    peft_model = save_peft_adapter(make_tiny_llama(), tmp_path / "adapter", target_modules=list(ALL_PROJECTIONS))
    with torch.no_grad():
        want = peft_model(torch.tensor([IDS])).logits[0].numpy()
    merged = export_merged_gguf(tmp_path / "adapter", folder, tmp_path / "merged.gguf").path
    got = llama_logits(merged, IDS)
    rel = _close(got, want)
    print(f"HF-folder merged: max |llama.cpp - PEFT| {rel:.2e} of the logits' range")
    assert rel < 1e-3

    llm = llama_cpp.Llama(model_path=str(merged), n_ctx=256, verbose=False)
    try:
        for text in [*TINY_CORPUS, "  x = 12345 ,\t'll"]:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tokenizer(text)["input_ids"], text
        assert llm.token_eos() == tokenizer.eos_token_id and llm.token_bos() == tokenizer.bos_token_id
    finally:
        llm.close()
