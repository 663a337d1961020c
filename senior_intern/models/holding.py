"""How ``load_base_model`` will hold a base in memory, read from its files without loading it.

``base_holding(path, base_quantization)`` groups the base's tensors as the loader treats them:

- a GGUF file: every linear weight whose block type has a kernel stays in the file's blocks
  (``FrozenLinear``), at the bytes the file gives it, and so does the token embedding in any
  such type but F32 (``FrozenEmbedding``; not Gemma's scaled ones); the rest (norms, biases)
  is dequantised into the compute dtype. An architecture the compact
  reader cannot map loads dense (``gguf_model.compact_supported``), and a linear weight of a type
  without a kernel makes the open fail (``unsupported`` names them).
- a Hugging Face folder: ``base_quantization`` (``auto`` resolved for this machine) quantises the
  decoder's linear weights (2-D, not the embeddings or the LM head) to int8 (a float32 scale per
  row) or int4 (a float32 scale per 32 inputs); everything else stays in the compute dtype.

``memory_bytes(dtype_bytes)`` is what the weights take once opened.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from math import prod
from typing import Any, Callable

from senior_intern.models.info import ModelLoadError

INT4_GROUP = 32
SCALED_EMBEDDINGS = ("gemma",)
"""GGUF architecture prefixes whose transformers embedding scales its rows (``Gemma*ScaledWordEmbedding``
in gemma2, gemma3 and gemma4: not a plain ``nn.Embedding``), which the loader keeps dense."""


@dataclass(frozen=True)
class HeldPart:
    """Weight matrices (linear layers, a GGUF token embedding) held compactly in one form:
    ``kind`` is a GGUF block type or int8/int4."""

    kind: str
    tensors: int
    elements: int
    nbytes: int


@dataclass(frozen=True)
class BaseHolding:
    """How a base will be held: ``held`` is ``"gguf"``, ``"int8"``, ``"int4"`` or ``"float"``."""

    held: str
    compact: tuple[HeldPart, ...]
    dense_elements: int  # held in the compute dtype
    unsupported: tuple[str, ...] = ()  # GGUF block types of linear weights without a kernel
    head: HeldPart | None = None  # the compact weight the LM head reads (a tied head: the token embedding)
    lookup: HeldPart | None = None  # a compact token embedding only looked up (not the head's weight)

    def decoder_parts(self) -> dict[str, int]:
        """Elements per block type of the compact weights besides the head and a looked-up
        embedding: the decoder's linear layers, each dequantised once per pass over the model."""
        elements = {p.kind: p.elements for p in self.compact}
        for part in (self.head, self.lookup):
            if part is not None:
                elements[part.kind] -= part.elements
        return {kind: n for kind, n in elements.items() if n}

    @property
    def compact_bytes(self) -> int:
        """Bytes of the compact weights."""
        return sum(p.nbytes for p in self.compact)

    def memory_bytes(self, dtype_bytes: int) -> int:
        """Bytes of the opened weights with ``dtype_bytes`` per dense element (4: float32, 2: bfloat16)."""
        return self.compact_bytes + self.dense_elements * dtype_bytes


def base_holding(path: str | os.PathLike[str], base_quantization: str = "none") -> BaseHolding:
    """How ``load_base_model(path, base_quantization=...)`` holds the base; see the module docstring.
    Raises ``ModelLoadError`` as ``metadata`` does for a path that is not a model."""
    from senior_intern.models.inspection import hf_layout, read_safetensors_header, resolve_model_path

    source = resolve_model_path(path)
    if source.is_file():
        return _gguf_holding(source)
    layout = hf_layout(source)
    shapes = {name: tuple(entry["shape"]) for file in layout.weight_files
              for name, entry in read_safetensors_header(file).items() if name != "__metadata__"}
    from senior_intern.models.loader import pick_base_quantization

    total = sum(prod(s) for s in shapes.values())
    kind = pick_base_quantization(base_quantization, total)
    if kind == "none":
        return BaseHolding("float", (), total)
    linear = [s for name, s in shapes.items()
              if len(s) == 2 and name.endswith(".weight") and "embed" not in name and "lm_head" not in name]
    elements = sum(prod(s) for s in linear)
    if kind == "int8":
        nbytes = sum(prod(s) + 4 * s[0] for s in linear)
    else:  # a layer whose inputs are not a multiple of the group stays int8 (FrozenLinear.quantize)
        nbytes = sum(prod(s) // 2 + 4 * prod(s) // INT4_GROUP if s[1] % INT4_GROUP == 0 else prod(s) + 4 * s[0]
                     for s in linear)
    return BaseHolding(kind, (HeldPart(kind, len(linear), elements, nbytes),), total - elements)


def _gguf_holding(source) -> BaseHolding:
    from gguf import GGMLQuantizationType

    from senior_intern.models.dequant import KERNELS
    from senior_intern.models.gguf_header import read_gguf_header
    from senior_intern.models.gguf_model import compact_supported

    header = read_gguf_header(source)
    total = sum(t.n_elements for t in header.tensors)
    if not compact_supported(header.architecture):
        return BaseHolding("float", (), total)
    counts: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    unsupported = set()
    special: dict[str, HeldPart] = {}  # the compact token embedding and output weight, by name
    tied = True  # no output.weight: the head reads the token embedding
    for t in header.tensors:
        tied = tied and t.name != "output.weight"
        if len(t.shape) != 2:
            continue
        try:
            kind = GGMLQuantizationType(t.ggml_type).name
        except ValueError:
            raise ModelLoadError(f"{source}: tensor {t.name} has unknown GGUF type {t.ggml_type}") from None
        if t.name.startswith("token_embd") and (kind not in KERNELS or kind == "F32"
                                                or header.architecture.startswith(SCALED_EMBEDDINGS)):
            continue  # dense: FrozenEmbedding takes a plain embedding in a block type with a kernel
        if kind not in KERNELS:
            unsupported.add(kind)
            continue
        counts[kind] += 1
        elements[kind] += t.n_elements
        nbytes[kind] += t.nbytes
        if t.name in ("token_embd.weight", "output.weight"):
            special[t.name] = HeldPart(kind, 1, t.n_elements, t.nbytes)
    parts = tuple(HeldPart(k, counts[k], elements[k], nbytes[k]) for k in sorted(counts, key=lambda k: -nbytes[k]))
    embedding = special.get("token_embd.weight")
    head = embedding if tied else special.get("output.weight")
    return BaseHolding("gguf", parts, total - sum(elements.values()), tuple(sorted(unsupported)),
                       head=head, lookup=None if tied else embedding)


def check_weights_fit(path: str | os.PathLike[str], base_quantization: str, dtype: Any, device: Any,
                      available: int | None, more: Callable[[], str] = lambda: "", can_quantize: bool = True) -> None:
    """Refuse, before anything is loaded, a base whose weights alone (held as the loader will hold
    them, dense parts in the torch ``dtype``) exceed ``available`` bytes free on the torch ``device``:
    ``ValueError`` with the weights' size, the free memory, ``more()`` (computed only then) and
    what to change (``can_quantize`` False: the caller has no ``base_quantization`` to offer).
    A path that is not a model, or ``available`` None, is left to the loader."""
    from senior_intern.hardware.metrics import format_bytes

    if available is None:
        return
    try:
        holding = base_holding(path, base_quantization)
    except (ModelLoadError, OSError):
        return
    weights = holding.memory_bytes(dtype.itemsize)
    if weights <= available:
        return
    where = "this machine" if device.type == "cpu" else str(device)
    held = {"gguf": "in the GGUF file's own blocks", "int8": "as int8", "int4": "as int4"}.get(holding.held, "as dense floats")
    folder = os.path.isdir(os.path.expanduser(path))
    if holding.held == "float" and folder and can_quantize:
        fix = "set base_quantization to int8 or int4 (auto picks by this machine's memory)"
    elif holding.held == "float" and folder:
        fix = "open it from a GGUF file (its blocks stay compact) or pick a smaller model"
    elif holding.held == "int8":
        fix = "set base_quantization to int4 (about half the bytes)"
    elif holding.held == "gguf":
        fix = "use a smaller quantization of the model (a Q4_K_M file holds about 4.8 bits a weight)"
    else:
        fix = "use a smaller model"
    raise ValueError(
        f"{path} does not fit: its weights alone take {format_bytes(weights)} held {held} (compute dtype "
        f"{str(dtype).removeprefix('torch.')}), but {where} has {format_bytes(available)} free{more()}. "
        f"To use it, {fix}, or free memory by closing other programs.")


_HELD = {"gguf": "compact: the GGUF file's own blocks, dequantised per layer", "int8": "compact: int8, quantised at load",
         "int4": "compact: int4, quantised at load", "float": "dense floats"}


def holding_rows(holding: BaseHolding) -> list[tuple[str, str]]:
    """``(label, value)`` rows saying how the base is held and the bytes its weights take opened
    (``model info`` and the GUI's model card show them; a part's label is indented)."""
    from senior_intern.hardware.metrics import format_bytes

    rows = [("Held as", _HELD[holding.held])]
    for part in holding.compact:
        rows.append((f"  {part.kind}", f"{part.tensors} weight {'matrix' if part.tensors == 1 else 'matrices'}, {format_bytes(part.nbytes)}"))
    if holding.compact:
        rows.append(("  float", f"{holding.dense_elements:,} other values (norms, biases, embeddings not kept compact) "
                                "in the compute dtype"))
    if holding.unsupported:
        rows.append(("  refused", f"{', '.join(holding.unsupported)}: no kernel for these block types, "
                                  "the model cannot open; convert the file to Q8_0 or Q4_K"))
    rows.append(("In memory", f"{format_bytes(holding.memory_bytes(4))} with float32, "
                              f"{format_bytes(holding.memory_bytes(2))} with bfloat16"))
    return rows
