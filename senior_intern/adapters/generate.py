"""Try an adapter: generate text from a prompt with the base model alone or with the adapter.

Tokens stream through ``on_token`` as text pieces (the GUI playground shows base and adapter
side by side); ``should_stop`` is polled between tokens so generation can be stopped.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from senior_intern.adapters.store import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE
from senior_intern.config import LoraBias, LoraConfig


def lora_config_from_peft(config: dict[str, Any]) -> LoraConfig:
    """Our ``LoraConfig`` from a PEFT ``adapter_config.json`` dict (refuses what we cannot apply)."""
    if config.get("use_dora"):
        raise ValueError("DoRA adapters are not supported")
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    bias = str(config.get("bias") or "none")
    return LoraConfig(
        rank=int(config["r"]),
        alpha=float(config.get("lora_alpha", config["r"])),
        dropout=float(config.get("lora_dropout") or 0.0),
        target_modules=list(targets),
        bias=LoraBias(bias) if bias in {b.value for b in LoraBias} else LoraBias.NONE,
    )


def attach_adapter(model: torch.nn.Module, adapter_dir: str | Path, base_hash: str | None = None):
    """Wrap ``model`` with the adapter in ``adapter_dir`` and load its weights; returns the ``LoraModel``.

    A base whose content hash differs from the one the adapter was trained on gives a warning;
    mismatched shapes are a ``ValueError`` naming the first mismatching tensor.
    """
    from safetensors.torch import load_file

    from senior_intern.lora import LoraModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / CONFIG_FILE).is_file() or not (adapter_dir / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"Not an adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}): {adapter_dir}")
    config = json.loads((adapter_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    if (adapter_dir / METADATA_FILE).is_file() and base_hash:
        meta = json.loads((adapter_dir / METADATA_FILE).read_text(encoding="utf-8"))
        trained_on = (meta.get("base_model") or {}).get("hash")
        if trained_on and trained_on != base_hash:
            warnings.warn(
                f"Adapter {adapter_dir.name} was trained on a different base model (hash {trained_on[:12]}, this one {base_hash[:12]})",
                stacklevel=2,
            )
    lora = LoraModel(model, lora_config_from_peft(config))
    weights = load_file(str(adapter_dir / WEIGHTS_FILE))
    lora.load_lora_state_dict(weights)
    lora.eval()
    return lora


def build_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids for ``prompt``: through the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    on_token: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
) -> str:
    """Generate a reply (greedy at temperature 0) and return its text; streams pieces to ``on_token``."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    device = next(model.parameters()).device
    ids = torch.tensor([build_prompt(tokenizer, prompt)], device=device)
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_cfg = getattr(model, "generation_config", None)
    extra = getattr(gen_cfg, "eos_token_id", None)
    eos |= set(extra if isinstance(extra, list) else [extra] if extra is not None else [])
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out: list[int] = []
    text = ""
    past = None
    step_input = ids
    for _ in range(max_new_tokens):
        if should_stop is not None and should_stop():
            break
        result = model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = result.past_key_values
        logits = result.logits[0, -1].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1).cpu()
            token = int(torch.multinomial(probs, 1, generator=generator))
        else:
            token = int(logits.argmax())
        if token in eos:
            break
        out.append(token)
        new_text = tokenizer.decode(out, skip_special_tokens=True)
        if on_token is not None and len(new_text) > len(text) and not new_text.endswith("\ufffd"):
            on_token(new_text[len(text):])
            text = new_text
        step_input = torch.tensor([[token]], device=device)
    final = tokenizer.decode(out, skip_special_tokens=True)
    if on_token is not None and len(final) > len(text):
        on_token(final[len(text):])
    return final


@dataclass
class Playground:
    """A base model loaded once, optionally with an adapter that can be switched on and off."""

    model: torch.nn.Module
    tokenizer: Any
    lora: Any | None = None

    def generate(self, prompt: str, use_adapter: bool, **kw: Any) -> str:
        """Generate with the adapter on (``use_adapter``) or off (the base alone)."""
        if self.lora is not None:
            (self.lora.enable if use_adapter else self.lora.disable)()
        elif use_adapter:
            raise ValueError("No adapter is loaded")
        return generate(self.model, self.tokenizer, prompt, **kw)


def load_for_playground(base_model_path: str | Path, adapter_dir: str | Path | None = None, device: str = "auto") -> Playground:
    """Load the base model (and the adapter, when given) for side-by-side generation.

    ``device`` "auto": the device training would pick (``hardware.detect.recommended_device``);
    the loader's "auto" dtype then gives bfloat16 (float16) on a GPU and float32 on the CPU.
    """
    from senior_intern.hardware.detect import recommended_device
    from senior_intern.models import load_base_model

    if device == "auto":
        device = recommended_device()
    loaded = load_base_model(str(base_model_path), device=device)
    lora = attach_adapter(loaded.model, adapter_dir, loaded.info.content_hash) if adapter_dir else None
    return Playground(loaded.model, loaded.tokenizer, lora)
