"""``check_fits``: does an adapter's every LoRA tensor fit a module of a given base model?

Used by ``import --base``: an adapter trained for another model (other sizes, other module names)
is refused with the first mismatches named, instead of entering the library and failing later in
the playground, a merge or an export. The base is built on the ``meta`` device from its config,
so no weights are read.
"""

from __future__ import annotations

from pathlib import Path

from senior_intern.lora import PEFT_PREFIX

# key suffix -> True when the tensor's input side ([r, in] / [r, num_embeddings]) must match the
# module's fan-in, False when its output side ([out, r] / [dim, r]) must match the fan-out
_SIDES = ((".lora_A.weight", True), (".lora_B.weight", False), (".lora_embedding_A", True), (".lora_embedding_B", False))
MAX_LISTED = 5


def module_shapes(base_path: str | Path) -> dict[str, tuple[int, int]]:
    """``{module path: (in_features, out_features)}`` of every linear and embedding of the base
    (embeddings as ``(num_embeddings, embedding_dim)``)."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    from senior_intern.models.tokenizer import model_folder

    config = AutoConfig.from_pretrained(model_folder(base_path), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif isinstance(module, nn.Embedding):
            shapes[name] = (module.num_embeddings, module.embedding_dim)
    return shapes


def mismatches(weight_shapes: dict[str, list[int]], modules: dict[str, tuple[int, int]]) -> list[str]:
    """What does not fit, one line per tensor: a module the base lacks, or a size that differs."""
    found = []
    for key, shape in sorted(weight_shapes.items()):
        side = next(((suffix, s) for suffix, s in _SIDES if key.endswith(suffix)), None)
        if side is None or len(shape) != 2:
            continue
        module = key.removeprefix(PEFT_PREFIX)[: -len(side[0])]
        if module not in modules:
            found.append(f"{key}: the base has no module {module!r}")
            continue
        fan_in, fan_out = modules[module]
        want, got = (fan_in, shape[1]) if side[1] else (fan_out, shape[0])
        if want != got:
            found.append(f"{key}: size {got}, the base's {module} needs {want}")
    return found


def check_fits(weight_shapes: dict[str, list[int]], base_path: str | Path) -> None:
    """Raise ``ValueError`` naming the first mismatches when the adapter does not fit ``base_path``."""
    wrong = mismatches(weight_shapes, module_shapes(base_path))
    if wrong:
        more = f"\n  ... and {len(wrong) - MAX_LISTED} more" if len(wrong) > MAX_LISTED else ""
        raise ValueError(
            f"The adapter does not fit the base model {base_path} ({len(wrong)} tensor(s)); it was trained for "
            "another model. Import it without --base, or name the base it was trained on:\n  "
            + "\n  ".join(wrong[:MAX_LISTED]) + more
        )
