"""Which modules of a model get LoRA: the matching rules.

Rules (case-sensitive, like PEFT):

1. A target ``t`` in ``target_modules`` matches a module whose full dotted name equals ``t`` or
   ends with ``"." + t``. So ``q_proj`` matches ``model.layers.0.self_attn.q_proj``, and
   ``self_attn.q_proj`` or ``layers.0.self_attn.q_proj`` narrow it down; ``proj`` does not match
   ``q_proj`` (whole name components only).
2. The target ``all-linear`` matches every ``nn.Linear`` except the LM head: the module returned
   by ``model.get_output_embeddings()`` (Hugging Face models) and any module named ``lm_head``.
3. Named targets adapt ``nn.Linear`` and ``nn.Embedding`` modules; other module types that match
   are reported and left alone.
4. ``apply_to_embeddings`` adds the input embedding (``model.get_input_embeddings()``, or every
   ``nn.Embedding`` for models without that method); ``apply_to_lm_head`` adds the LM head.
5. Linear layers inside ``nn.MultiheadAttention`` are skipped (it reads their weights directly,
   so a wrapper would be bypassed) with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from senior_intern.config import ALL_LINEAR, LoraConfig


def name_matches(name: str, target: str) -> bool:
    """Rule 1: ``name`` equals ``target`` or ends with ``"." + target``."""
    return name == target or name.endswith("." + target)


@dataclass
class TargetSelection:
    """Modules to wrap, in model order, and what the user should hear about the choice."""

    linear: list[str] = field(default_factory=list)
    embedding: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _special_module(model: nn.Module, getter: str) -> nn.Module | None:
    get = getattr(model, getter, None)
    if not callable(get):
        return None
    try:
        module = get()
    except (NotImplementedError, AttributeError):
        return None
    return module if isinstance(module, nn.Module) else None


def head_names(model: nn.Module) -> set[str]:
    """Names of the LM head: the output embedding (Hugging Face) and modules named ``lm_head``."""
    head = _special_module(model, "get_output_embeddings")
    return {
        name
        for name, module in model.named_modules()
        if name and (module is head or name_matches(name, "lm_head"))
    }


def input_embedding_names(model: nn.Module) -> set[str]:
    """Names of the input embedding(s): ``get_input_embeddings()`` or else every ``nn.Embedding``."""
    embed = _special_module(model, "get_input_embeddings")
    if embed is not None:
        return {name for name, module in model.named_modules() if module is embed}
    return {name for name, module in model.named_modules() if isinstance(module, nn.Embedding)}


def select_targets(model: nn.Module, cfg: LoraConfig) -> TargetSelection:
    """Apply the matching rules to ``model`` and return the modules to wrap."""
    sel = TargetSelection()
    named = [t for t in cfg.target_modules if t != ALL_LINEAR]
    all_linear = ALL_LINEAR in cfg.target_modules
    heads = head_names(model)
    embeds = input_embedding_names(model) if cfg.apply_to_embeddings else set()
    mha_children = {
        f"{name}.{child}" if name else child
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_children()
    }
    used: set[str] = set()
    for name, module in model.named_modules():
        if not name:
            continue
        hits = [t for t in named if name_matches(name, t)]
        used.update(hits)
        if isinstance(module, nn.Linear):
            is_head = name in heads
            wanted = bool(hits) or (all_linear and not is_head) or (is_head and cfg.apply_to_lm_head)
            if wanted and name in mha_children:
                sel.warnings.append(f"{name} is inside nn.MultiheadAttention, which bypasses wrappers; not adapted")
            elif wanted:
                sel.linear.append(name)
        elif isinstance(module, nn.Embedding):
            if hits or name in embeds:
                sel.embedding.append(name)
        elif hits:
            sel.warnings.append(
                f"target {', '.join(repr(h) for h in hits)} matched {name} ({type(module).__name__}), "
                "which is neither nn.Linear nor nn.Embedding; not adapted"
            )
    available = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and isinstance(m, nn.Linear)})
    if not sel.linear and not sel.embedding:
        sel.warnings.append(
            f"no module matched target_modules {list(cfg.target_modules)}; "
            f"available linear layer names: {', '.join(available) or '(none)'}"
        )
    else:
        for target in named:
            if target not in used:
                sel.warnings.append(f"target {target!r} matched no module; the model's linear layer names: {', '.join(available)}")
    if cfg.apply_to_lm_head and not heads:
        sel.warnings.append("apply_to_lm_head is set but the model has no LM head (no get_output_embeddings(), no lm_head)")
    if cfg.apply_to_embeddings and not embeds:
        sel.warnings.append("apply_to_embeddings is set but the model has no nn.Embedding input embedding")
    return sel
