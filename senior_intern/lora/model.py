"""``LoraModel``: put LoRA wrappers into any torch module and manage them together.

The wrapped model is adapted in place (``LoraModel(model, cfg).model is model``): every
matching ``nn.Linear`` becomes a ``LoraLayer`` and, when asked, embeddings become
``LoraEmbedding`` (matching rules: ``senior_intern.lora.targets``). Every base parameter is
frozen; biases train too with ``bias = all`` (every bias of the model, as in PEFT).

``lora_state_dict()`` uses PEFT's saved key names exactly
(``base_model.model.<module path>.lora_A.weight`` ...), so it can be written as
``adapter_model.safetensors`` next to ``peft_adapter_config(...)`` and loaded by PEFT, and a
PEFT adapter's tensors load back with ``load_lora_state_dict``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from senior_intern.config import LoraBias, LoraConfig
from senior_intern.lora.base import LoraBase
from senior_intern.lora.delta import refuse_tied, tied_message, tied_weights
from senior_intern.lora.embedding import LoraEmbedding
from senior_intern.lora.layer import LoraLayer
from senior_intern.lora.targets import select_targets
from senior_intern.models.info import format_parameter_count
from senior_intern.models.quantized import FrozenEmbedding, FrozenLinear

PEFT_PREFIX = "base_model.model."


class LoadResult(NamedTuple):
    """Keys that ``load_lora_state_dict(strict=False)`` could not use."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _is_bias(name: str) -> bool:
    return name == "bias" or name.endswith(".bias")


class LoraModel(nn.Module):
    """A model with LoRA wrappers injected, plus the operations over all of them.

    ``model``: any ``nn.Module`` (adapted in place, kept as ``.model``). ``cfg``: the LoRA
    settings. ``dtype``: dtype of the LoRA factors (default: each base weight's dtype).

    After construction ``matched_modules`` lists the wrapped modules' names and ``warnings``
    what the user should know (e.g. nothing matched). Raises ``ValueError`` when the model
    already holds LoRA wrappers, or for ``bias != none`` together with ``apply_to_embeddings``.
    """

    def __init__(self, model: nn.Module, cfg: LoraConfig, *, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if any(isinstance(m, LoraBase) for m in model.modules()):
            raise ValueError("The model already contains LoRA layers; unwrap() the previous LoraModel first")
        bias_mode = LoraBias(cfg.bias)
        if cfg.apply_to_embeddings and bias_mode != LoraBias.NONE:
            raise ValueError(
                f"lora.bias = {bias_mode.value!r} cannot be combined with apply_to_embeddings: PEFT has no LoRA "
                "bias for embedding layers; set bias = 'none' or apply_to_embeddings = false"
            )
        self.model = model
        self.cfg = cfg
        self.bias_mode = bias_mode
        self._requires_grad_before = {n: p.requires_grad for n, p in model.named_parameters()}
        model.requires_grad_(False)

        selection = select_targets(model, cfg)
        self.warnings: list[str] = list(selection.warnings)
        wrappers: dict[str, LoraBase] = {}
        try:  # build every wrapper before touching the model, so an error leaves it as it was
            for name in selection.linear:
                wrappers[name] = LoraLayer(model.get_submodule(name), cfg, name, dtype=dtype)
            for name in selection.embedding:  # a compact embedding becomes dense to carry LoRA
                base = model.get_submodule(name)
                base = base.to_dense() if isinstance(base, FrozenEmbedding) else base
                wrappers[name] = LoraEmbedding(base, cfg, name, dtype=dtype)
        except (ValueError, TypeError):
            self._restore_requires_grad()
            raise
        self._layers: dict[str, LoraBase] = {}
        for name in [n for n, _ in model.named_modules() if n in wrappers]:  # model order
            self._replace(name, wrappers[name])
        self.matched_modules: list[str] = list(self._layers)
        if bias_mode == LoraBias.ALL:
            for name, param in model.named_parameters():
                if _is_bias(name):
                    param.requires_grad_(True)
        self._tied = self._find_tied_weights()
        for name, other in self._tied.items():
            self.warnings.append(tied_message(name, other))
        self.train(model.training)

    # --- construction helpers -----------------------------------------------------------------
    def _replace(self, name: str, wrapper: LoraBase) -> None:
        parent_name, _, child = name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        setattr(parent, child, wrapper)
        self._layers[name] = wrapper

    def _restore_requires_grad(self) -> None:
        for name, param in self.model.named_parameters():
            param.requires_grad_(self._requires_grad_before.get(name, False))

    def _find_tied_weights(self) -> dict[str, str]:
        # A compact base weight is made afresh on each read, so it is shared with nothing; reading
        # them all here would hold every dequantised weight at once (4 bytes per base parameter).
        return tied_weights(self.model, {name: layer.base_layer.weight for name, layer in self._layers.items()
                                         if not isinstance(layer.base_layer, FrozenLinear)})

    # --- forward and modes --------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped model with the same arguments."""
        return self.model(*args, **kwargs)

    def train(self, mode: bool = True) -> "LoraModel":
        """LoRA layers follow ``mode`` (dropout on in training); the base model stays in eval mode.

        Exception: modules with gradient checkpointing switched on (Hugging Face sets
        ``gradient_checkpointing = True`` on its decoder layers) get their own ``training`` flag
        set to ``mode``, since they only recompute activations in training mode; their children
        stay in eval mode.
        """
        self.training = mode
        self.model.eval()
        for layer in self._layers.values():
            layer.train(mode)
            layer.base_layer.eval()
        for module in self.model.modules():
            if getattr(module, "gradient_checkpointing", False) is True:
                module.training = mode
        return self

    # --- layers and parameters ----------------------------------------------------------------
    def lora_layers(self) -> dict[str, LoraBase]:
        """Wrapped modules by qualified name (in model order)."""
        return dict(self._layers)

    def _trainable_named(self) -> dict[str, nn.Parameter]:
        """Trainable tensors by their name in ``self.model`` (PEFT key without the prefix)."""
        factors = {f"{name}.{key}" for name, layer in self._layers.items() for key in layer.lora_tensors()}
        with_biases = self.bias_mode == LoraBias.ALL
        return {
            name: param
            for name, param in self.model.named_parameters()
            if name in factors or (with_biases and _is_bias(name))
        }

    def lora_parameters(self) -> list[nn.Parameter]:
        """The parameters to optimise: LoRA factors, LoRA biases, and every bias with ``bias = all``."""
        return list(self._trainable_named().values())

    @property
    def trainable_parameter_count(self) -> int:
        """Elements in ``lora_parameters()``."""
        return sum(p.numel() for p in self.lora_parameters())

    @property
    def total_parameter_count(self) -> int:
        """Elements in all parameters of the model, LoRA included (tied tensors counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def frozen_parameter_count(self) -> int:
        """Elements that do not train: total minus trainable."""
        return self.total_parameter_count - self.trainable_parameter_count

    def parameter_summary(self) -> str:
        """For example ``"trainable 4.9M / total 139.4M (3.51%)"``."""
        trainable, total = self.trainable_parameter_count, self.total_parameter_count
        share = 100.0 * trainable / total if total else 0.0
        return f"trainable {format_parameter_count(trainable)} / total {format_parameter_count(total)} ({share:.2f}%)"

    def target_module_names(self) -> list[str]:
        """Last name component of each wrapped module, sorted and unique (``target_modules`` for PEFT)."""
        return sorted({name.rsplit(".", 1)[-1] for name in self._layers})

    # --- operations over all layers -----------------------------------------------------------
    def merge(self) -> None:
        """Merge every layer into its base weight.

        ``ValueError`` for a layer whose weight is tied to another module, or when a LoRA tensor
        holds NaN/Inf (checked for all layers before any base weight changes). Should a merged
        weight still overflow, the layers merged so far are unmerged again before the error.
        """
        refuse_tied(self._tied)
        for layer in self._layers.values():
            if not layer.merged:
                layer.check_finite()
        done = []
        try:
            for layer in self._layers.values():
                layer.merge()
                done.append(layer)
        except ValueError:
            for layer in done:
                layer.unmerge()
            raise

    def unmerge(self) -> None:
        """Unmerge every merged layer."""
        for layer in self._layers.values():
            layer.unmerge()

    def enable(self) -> None:
        """Enable every LoRA layer."""
        for layer in self._layers.values():
            layer.enable()

    def disable(self) -> None:
        """Disable every LoRA layer: the model computes the base output only."""
        for layer in self._layers.values():
            layer.disable()

    def reset(self) -> None:
        """Re-initialise every LoRA layer (trainable base biases are left as they are)."""
        for layer in self._layers.values():
            layer.reset()

    # --- state dict ---------------------------------------------------------------------------
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable tensors under PEFT's saved key names (detached; they share storage with the model)."""
        return {PEFT_PREFIX + name: p.detach() for name, p in self._trainable_named().items()}

    @torch.no_grad()
    def load_lora_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> LoadResult:
        """Copy tensors saved by ``lora_state_dict()`` (or by PEFT) into the model.

        strict: a missing or unexpected key raises ``ValueError`` naming the first one; otherwise
        those keys are skipped and returned. A shape mismatch always raises ``ValueError`` naming
        the key and both shapes. PEFT also saves the full weight of a targeted embedding or LM
        head (``<module>.base_layer.weight``); such optional keys are copied into the base
        weight. Merged layers are unmerged, loaded and merged again.
        """
        own = {PEFT_PREFIX + n: p for n, p in self._trainable_named().items()}
        optional = {PEFT_PREFIX + f"{n}.base_layer.weight": layer for n, layer in self._layers.items()}
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own and k not in optional]
        if strict and unexpected:
            raise ValueError(f"Unexpected LoRA key {unexpected[0]} ({len(unexpected)} unexpected in all); "
                             "the adapter was trained for other modules or another model")
        if strict and missing:
            raise ValueError(f"Missing LoRA key {missing[0]} ({len(missing)} missing in all); "
                             "the adapter does not cover the configured target modules")
        for key, layer in optional.items():  # a full base weight to load: a compact base becomes dense
            if key in state_dict and isinstance(layer.base_layer, FrozenLinear):
                layer.base_layer = layer.base_layer.to_dense()
        optional = {k: layer.base_layer.weight for k, layer in optional.items()}
        targets = {k: p for k, p in {**own, **optional}.items() if k in state_dict}
        for key, param in targets.items():
            if tuple(state_dict[key].shape) != tuple(param.shape):
                raise ValueError(f"Shape mismatch for {key}: the state dict has {_shape(state_dict[key])}, "
                                 f"the model expects {_shape(param)} (different rank or base model?)")
        merged = [layer for layer in self._layers.values() if layer.merged]
        for layer in merged:
            layer.unmerge()
        for key, param in targets.items():
            param.copy_(state_dict[key])
        for layer in merged:
            layer.merge()
        return LoadResult(missing, unexpected)

    # --- undo ---------------------------------------------------------------------------------
    def unwrap(self, merge: bool = False) -> nn.Module:
        """Put the original modules back (merged with their LoRA update when ``merge``) and return the model.

        Restores each base parameter's original ``requires_grad``. This LoraModel holds no layers
        afterwards.
        """
        if merge:
            self.merge()
        else:
            self.unmerge()
        for name, layer in self._layers.items():
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, layer.base_layer)
        self._layers = {}
        self.matched_modules = []
        self._tied = {}
        self._restore_requires_grad()
        return self.model
