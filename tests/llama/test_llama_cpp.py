"""The exported files run by the real llama.cpp (llama-cpp-python): the optional ``llama_cpp`` tier.

``make test-llama`` builds llama-cpp-python into ``.venv-llama/site`` and runs this tier; ``make
test`` runs it too when that folder exists, and skips it otherwise (no prebuilt llama.cpp wheel
on PyPI runs on this project's glibc 2.36 machines, and compiling takes 10-15 minutes on 2 cores).

On the demo model: a random LoRA on the attention projections is exported as a GGUF adapter and
as a merged GGUF; llama.cpp's next-token logits with ``--lora``, and of the merged file alone,
must move from llama.cpp's base logits as PEFT's move from PEFT's base logits on the same
GGUF-dequantised weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: run `make test-llama` to build it into .venv-llama")

from senior_intern.adapters.gguf import export_gguf  # noqa: E402
from senior_intern.adapters.gguf_merge import export_merged_gguf  # noqa: E402
from senior_intern.models import load_base_model  # noqa: E402
from tests.adapters.conftest import save_peft_adapter  # noqa: E402

pytestmark = [pytest.mark.llama_cpp, pytest.mark.slow]
PROMPT = "def reverse_string(s):\n    return"


def _llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    kwargs = {"model_path": str(model), "n_ctx": 128, "logits_all": True, "verbose": False, "n_threads": 2, "seed": 0}
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    llm = llama_cpp.Llama(**kwargs)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    del llm
    return logits


def _compare(delta_llama: np.ndarray, delta_peft: np.ndarray, adapted_llama: np.ndarray, adapted_peft: np.ndarray) -> tuple[float, float]:
    """(max |difference of the logit deltas| / max |PEFT delta|, top-1 agreement of the adapted logits)."""
    rel = float(np.abs(delta_llama - delta_peft).max() / np.abs(delta_peft).max())
    top1 = float((adapted_llama.argmax(-1) == adapted_peft.argmax(-1)).mean())
    return rel, top1


def test_llama_cpp_applies_the_adapter_and_the_merged_file_as_peft_does(demo_gguf: Path, tmp_path: Path) -> None:
    loaded = load_base_model(demo_gguf, dtype="float32")
    ids = loaded.tokenizer(PROMPT)["input_ids"]
    peft_model = save_peft_adapter(loaded.model, tmp_path / "adapter", r=8, lora_alpha=16,
                                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    with torch.no_grad():
        adapted_peft = peft_model(torch.tensor([ids])).logits[0].numpy()
        with peft_model.disable_adapter():
            base_peft = peft_model(torch.tensor([ids])).logits[0].numpy()
    adapter = export_gguf(tmp_path / "adapter", demo_gguf, tmp_path / "adapter.gguf", dtype="f32")
    merged = export_merged_gguf(tmp_path / "adapter", demo_gguf, tmp_path / "merged.gguf", qtype="f16").path

    base_llama = _llama_logits(demo_gguf, ids)
    with_lora = _llama_logits(demo_gguf, ids, lora=adapter)
    merged_llama = _llama_logits(merged, ids)
    delta_peft = adapted_peft - base_peft
    assert np.abs(delta_peft).max() > 0.1  # the adapter changes the output enough to be seen
    rel, top1 = _compare(with_lora - base_llama, delta_peft, with_lora, adapted_peft)
    print(f"--lora: max delta difference {rel:.2e} of the delta, top-1 agreement {top1:.0%}")
    assert rel < 0.05 and top1 >= 0.9
    rel, top1 = _compare(merged_llama - base_llama, delta_peft, merged_llama, adapted_peft)
    print(f"merged: max delta difference {rel:.2e} of the delta, top-1 agreement {top1:.0%}")
    assert rel < 0.1 and top1 >= 0.9
