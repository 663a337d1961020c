"""Fixtures for the adapter exporters: PEFT-made adapter folders and a tiny Llama base folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_tiny_llama, make_tiny_tokenizer

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def save_peft_adapter(model: torch.nn.Module, folder: Path, *, seed: int = 0, r: int = 4, lora_alpha: float = 8,
                      save_embedding_layers: bool | str = "auto", **kwargs):
    """Wrap ``model`` with the real PEFT LoRA, give every B random non-zero values, save to ``folder``.

    Targets all seven projections unless ``target_modules`` is given; ``kwargs`` go to
    ``peft.LoraConfig``; ``save_embedding_layers=False`` keeps PEFT from adding the full
    lm_head/embedding weights when those are targeted. Returns the PEFT model (eval mode); ``model`` is modified in place.
    """
    import peft

    kwargs.setdefault("target_modules", list(ALL_PROJECTIONS))
    config = peft.LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=0.0, **kwargs)
    peft_model = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(folder, save_embedding_layers=save_embedding_layers)
    return peft_model.eval()


@pytest.fixture
def tiny_base_dir(tmp_path: Path) -> Path:
    """A tiny Llama (``make_tiny_llama()``) and tokenizer saved as a Hugging Face folder."""
    folder = tmp_path / "base"
    make_tiny_llama().save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder
