"""Try an adapter: generate text from a prompt with the base model alone or with the adapter.

Tokens stream through ``on_token`` as text pieces (the GUI playground shows base and adapter
side by side); ``should_stop`` is polled between tokens so generation can be stopped.
"""

from __future__ import annotations

import json
import time
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


STOP_MAX_TOKENS = "max_tokens"
STOP_END_OF_TEXT = "end_of_text"
STOP_BY_USER = "stopped"
STOP_REASONS = {
    STOP_MAX_TOKENS: "reached the max new tokens",
    STOP_END_OF_TEXT: "the model ended its answer",
    STOP_BY_USER: "stopped by you",
}


def build_prompt(tokenizer, prompt: str, system_prompt: str = "") -> list[int]:
    """Token ids for ``prompt`` (after ``system_prompt`` when given), through the chat template when there is one.

    A template that refuses a system message (some do) gets the system text before the user's.
    """
    system_prompt = system_prompt.strip()
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception:  # the template has no system role (it raises): fold it into the user turn
            if not system_prompt:
                raise
            folded = [{"role": "user", "content": f"{system_prompt}\n\n{prompt}"}]
            ids = tokenizer.apply_chat_template(folded, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    text = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """The next token: the most likely at temperature 0, else sampled from the top-p nucleus."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
    if 0 < top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = (torch.cumsum(sorted_probs, dim=0) - sorted_probs) < top_p  # always keeps the first
        sorted_probs = sorted_probs * keep
        return int(order[int(torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator))])
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class GenerationResult:
    """A finished reply: its text, how many tokens, the seconds spent and why it stopped."""

    text: str
    tokens: int
    seconds: float
    stop_reason: str

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of this reply's own compute (0 when none)."""
        return self.tokens / self.seconds if self.seconds > 0 and self.tokens else 0.0

    def summary(self) -> str:
        """One line for the user: "12 tokens · 34.5 tokens/s · reached the max new tokens"."""
        return f"{self.tokens} tokens · {self.tokens_per_second:.1f} tokens/s · {STOP_REASONS[self.stop_reason]}"


class Generation:
    """One reply generated a token at a time (``step``), so two replies can advance together."""

    def __init__(self, model: torch.nn.Module, tokenizer, prompt: str, *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, system_prompt: str = "", seed: int = 0,
                 on_token: Callable[[str], None] | None = None) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.model, self.tokenizer, self.on_token = model, tokenizer, on_token
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.device = next(model.parameters()).device
        self._input = torch.tensor([build_prompt(tokenizer, prompt, system_prompt)], device=self.device)
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self._eos = eos | set(extra if isinstance(extra, list) else [extra] if extra is not None else [])
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._out: list[int] = []
        self._past = None
        self._text = ""
        self.seconds = 0.0
        self.stop_reason: str | None = None

    @property
    def done(self) -> bool:
        """True once the reply has stopped (for any reason)."""
        return self.stop_reason is not None

    @torch.no_grad()
    def step(self) -> None:
        """Generate one more token (or notice the end); does nothing once done."""
        if self.done:
            return
        if len(self._out) >= self.max_new_tokens:
            self._finish(STOP_MAX_TOKENS)
            return
        started = time.perf_counter()
        result = self.model(input_ids=self._input, past_key_values=self._past, use_cache=True)
        self._past = result.past_key_values
        token = pick_token(result.logits[0, -1], self.temperature, self.top_p, self._generator)
        self.seconds += time.perf_counter() - started
        if token in self._eos:
            self._finish(STOP_END_OF_TEXT)
            return
        self._out.append(token)
        new_text = self.tokenizer.decode(self._out, skip_special_tokens=True)
        if len(new_text) > len(self._text) and not new_text.endswith("\ufffd"):
            self._emit(new_text[len(self._text):])
            self._text = new_text
        self._input = torch.tensor([[token]], device=self.device)
        if len(self._out) >= self.max_new_tokens:
            self._finish(STOP_MAX_TOKENS)

    def stop(self) -> None:
        """End the reply now (the user pressed Stop)."""
        if not self.done:
            self._finish(STOP_BY_USER)

    def _emit(self, piece: str) -> None:
        if self.on_token is not None and piece:
            self.on_token(piece)

    def _finish(self, reason: str) -> None:
        self.stop_reason = reason
        final = self.tokenizer.decode(self._out, skip_special_tokens=True)
        if len(final) > len(self._text):
            self._emit(final[len(self._text):])
        self._text = final
        self._past = None  # free the cache

    def result(self) -> GenerationResult:
        """The reply so far (final once ``done``)."""
        return GenerationResult(self._text, len(self._out), self.seconds, self.stop_reason or STOP_BY_USER)


def generate_detailed(model: torch.nn.Module, tokenizer, prompt: str, *,
                      should_stop: Callable[[], bool] | None = None, **kw: Any) -> GenerationResult:
    """Generate a reply (greedy at temperature 0, else top-p sampling); streams pieces to ``on_token``."""
    gen = Generation(model, tokenizer, prompt, **kw)
    while not gen.done:
        if should_stop is not None and should_stop():
            gen.stop()
        else:
            gen.step()
    return gen.result()


def generate(model: torch.nn.Module, tokenizer, prompt: str, **kw: Any) -> str:
    """The reply's text only (see ``generate_detailed``)."""
    return generate_detailed(model, tokenizer, prompt, **kw).text


@dataclass
class Playground:
    """A base model loaded once, optionally with an adapter that can be switched on and off."""

    model: torch.nn.Module
    tokenizer: Any
    lora: Any | None = None

    def _use(self, use_adapter: bool) -> None:
        if self.lora is not None:
            (self.lora.enable if use_adapter else self.lora.disable)()
        elif use_adapter:
            raise ValueError("No adapter is loaded")

    def generate(self, prompt: str, use_adapter: bool, **kw: Any) -> str:
        """Generate with the adapter on (``use_adapter``) or off (the base alone)."""
        self._use(use_adapter)
        return generate(self.model, self.tokenizer, prompt, **kw)

    def generate_together(self, prompt: str, sides: dict[str, bool], *,
                          on_token: Callable[[str, str], None] | None = None,
                          on_done: Callable[[str, GenerationResult], None] | None = None,
                          should_stop: Callable[[], bool] | None = None, **kw: Any) -> dict[str, GenerationResult]:
        """Generate one reply per side (name -> adapter on?) at once, a token each in turn.

        ``on_token(side, piece)`` streams text; ``on_done(side, result)`` fires as each side ends.
        Every side uses the same seed and settings, so the adapter is the only difference.
        """
        for use_adapter in sides.values():
            if use_adapter and self.lora is None:
                raise ValueError("No adapter is loaded")
        gens = {side: Generation(self.model, self.tokenizer, prompt, **kw,
                                 on_token=(lambda piece, s=side: on_token(s, piece)) if on_token else None)
                for side in sides}
        running = list(gens)
        while running:
            for side in list(running):
                if should_stop is not None and should_stop():
                    gens[side].stop()
                else:
                    self._use(sides[side])
                    gens[side].step()
                if gens[side].done:
                    running.remove(side)
                    if on_done is not None:
                        on_done(side, gens[side].result())
        return {side: gen.result() for side, gen in gens.items()}


def load_for_playground(base_model_path: str | Path, adapter_dir: str | Path | None = None, device: str = "auto",
                        progress: Callable[[int, int], None] | None = None) -> Playground:
    """Load the base model (and the adapter, when given) for side-by-side generation.

    ``device`` "auto": the device training would pick (``hardware.detect.recommended_device``);
    the loader's "auto" dtype then gives bfloat16 (float16) on a GPU and float32 on the CPU.
    ``progress(done, total)``: tensors read so far (the loader's; an exception it raises stops the load).
    """
    from senior_intern.hardware.detect import free_memory, recommended_device
    from senior_intern.models import load_base_model
    from senior_intern.models.holding import check_weights_fit
    from senior_intern.models.loader import resolve_dtype

    if device == "auto":
        device = recommended_device()
    dev = torch.device(device)
    check_weights_fit(base_model_path, "none", resolve_dtype(None, dev), dev, free_memory(dev), can_quantize=False)
    loaded = load_base_model(str(base_model_path), device=device, progress=progress)
    lora = attach_adapter(loaded.model, adapter_dir, loaded.info.content_hash) if adapter_dir else None
    return Playground(loaded.model, loaded.tokenizer, lora)
