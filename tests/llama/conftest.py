"""Helpers for the llama.cpp tier: logits and greedy text from llama.cpp, tiny GGUF bases, a trainer.

Everything here needs llama-cpp-python; the tier's modules skip when it is not importable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from senior_intern.adapters.gguf_hf import write_hf_gguf

# The tiny bases use the suite's tiny byte-level BPE tokenizer (300 tokens), converted from its
# tokenizer.json by the writer, so llama.cpp also checks that conversion.
TINY_VOCAB = 300


def _open_llama(model: Path, lora: Path | None):
    """llama.cpp on ``model`` (with the adapter ``lora`` at scale 1), with an F32 KV cache (its
    default is F16), so F32 bases compare with PyTorch to ~1e-6."""
    import llama_cpp

    kwargs = {"model_path": str(model), "n_ctx": 256, "logits_all": True, "verbose": False, "n_threads": 2,
              "seed": 0, "type_k": 0, "type_v": 0}
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    return llama_cpp.Llama(**kwargs)


def llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    """llama.cpp's logits ``[len(ids), vocab]`` for ``ids`` (the adapter ``lora`` applied at scale 1)."""
    llm = _open_llama(model, lora)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def llama_greedy(model: Path, ids: list[int], n_new: int, lora: Path | None = None) -> list[int]:
    """The ``n_new`` tokens llama.cpp picks greedily (argmax of its own logits) after ``ids``."""
    llm = _open_llama(model, lora)
    try:
        llm.eval(ids)
        out: list[int] = []
        for _ in range(n_new):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(token)
            llm.eval([token])
        return out
    finally:
        llm.close()


def make_tiny_hf(model_type: str, seed: int = 0, tied: bool = False) -> torch.nn.Module:
    """A tiny random Llama or Qwen2 causal LM (float32, eval mode) with the tiny tokenizer's vocabulary."""
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=tied)
    if model_type == "llama":
        config = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(config)
    elif model_type == "qwen2":
        config = transformers.Qwen2Config(**common, use_sliding_window=False)
        model = transformers.Qwen2ForCausalLM(config)
    else:
        raise ValueError(model_type)
    with torch.no_grad():  # larger weights than the default init, so the logits spread out
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.mul_(4.0)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape) * 0.1)
    return model.eval()


def write_tiny_gguf(model: torch.nn.Module, out: Path) -> Path:
    """``model`` as an F32 GGUF base (through ``write_hf_gguf``) with the tiny tokenizer, converted."""
    from tests.conftest import make_tiny_tokenizer

    folder = out.parent / f"{out.stem}-tokenizer"
    make_tiny_tokenizer().save_pretrained(folder)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    write_hf_gguf(out, model.config.to_dict(), state, matrix_type="f32", hf_folder=folder, name="tiny")
    return out


def train_phrase(model: torch.nn.Module, prompt: list[int], phrase: list[int], steps: int, lr: float) -> float:
    """Train the LoRA parameters of the PEFT ``model`` so that ``prompt`` is followed by ``phrase``.

    Returns the final cross-entropy on the phrase tokens; leaves the model in eval mode.
    """
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    ids = torch.tensor([prompt + phrase])
    labels = torch.tensor([[-100] * len(prompt) + phrase])
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def torch_greedy(model: torch.nn.Module, ids: list[int], n_new: int) -> list[int]:
    """The ``n_new`` tokens ``model`` picks greedily after ``ids`` (no cache, for tiny runs)."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n_new):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids):]


def dequantized_copy(source: Path, out: Path) -> Path:
    """``source`` with every tensor dequantised to F32 (header copied): the function PyTorch computes
    on the GGUF-dequantised weights, so llama.cpp and PEFT can be compared without quantisation noise."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(str(out), str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()))
    for name, fld in reader.fields.items():
        if name.startswith("GGUF.") or name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) or not fld.types:
            continue
        vtype = fld.types[0]
        sub_type = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(fld.types) > 1 else None
        writer.add_key_value(name, fld.contents(), vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, data.reshape([int(d) for d in reversed(tensor.shape.tolist())]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
