"""The exported files run by the real llama.cpp (llama-cpp-python): the optional ``llama_cpp`` tier.

``make test-llama`` builds llama-cpp-python into ``.venv-llama/site`` and runs this tier; ``make
test`` runs it too when that folder exists, and skips it otherwise (no prebuilt llama.cpp wheel
on PyPI runs on this project's glibc 2.36 machines; the build takes about 4 minutes on 2 cores).

On the demo model (SmolLM2, Llama architecture, Q4_1):

- on an F32 copy of the GGUF-dequantised demo, llama.cpp computes the function PEFT computes, so
  ``--lora`` and the merged file must reproduce PEFT's logits to ~1e-4 (measured 1.5e-5 of the
  adapter's delta); a wrong q/k permutation or scale shows as errors of order 1;
- on the Q4_1 file itself llama.cpp multiplies with 8-bit-quantised activations, which moves the
  base logits by ~1.2 (of ~39) and the adapter's delta by as much: there the deltas must
  correlate (measured 0.94-0.97 for --lora and merged F16/Q8_0) and llama.cpp's top token must
  be among PEFT's top 3 (top-1 agreement measured 89-100%);
- a trained adapter that makes the model say a fixed phrase must make llama.cpp say it, with
  ``--lora`` and as merged Q8_0 and F16 files. Not with ``--type same`` here: re-encoding the
  merged weights in the demo's Q4_1 lost the phrase after 12 training steps (and in one of
  three runs after 20), because a 4-bit step is as large as this adapter's change; the
  README says to pick q8_0 for 4-bit bases.
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
from senior_intern.models import load_base_model  # noqa: E402
from tests.adapters.conftest import ALL_PROJECTIONS, save_peft_adapter  # noqa: E402
from tests.llama.conftest import (  # noqa: E402
    dequantized_copy,
    llama_greedy,
    llama_logits,
    torch_greedy,
    train_phrase,
)

pytestmark = [pytest.mark.llama_cpp, pytest.mark.slow]
PROMPT = "def reverse_string(s):\n    return"


@pytest.fixture(scope="module")
def demo_run(demo_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random LoRA on every projection of the demo, its exports, and PEFT's logits with and without it."""
    tmp = tmp_path_factory.mktemp("demo")
    loaded = load_base_model(demo_gguf, dtype="float32")
    ids = loaded.tokenizer(PROMPT)["input_ids"]
    torch.manual_seed(0)  # PEFT draws the A factors from the global generator
    peft_model = save_peft_adapter(loaded.model, tmp / "adapter", r=8, lora_alpha=16, target_modules=list(ALL_PROJECTIONS))
    with torch.no_grad():
        adapted = peft_model(torch.tensor([ids])).logits[0].numpy()
        with peft_model.disable_adapter():
            base = peft_model(torch.tensor([ids])).logits[0].numpy()
    return {
        "ids": ids, "tmp": tmp, "adapter_dir": tmp / "adapter", "adapted": adapted, "base": base,
        "adapter": export_gguf(tmp / "adapter", demo_gguf, tmp / "adapter.gguf", dtype="f32"),
        "f32": dequantized_copy(demo_gguf, tmp / "demo-f32.gguf"),
    }


def test_demo_on_the_dequantized_base_lora_and_merged_reproduce_peft(demo_run: dict) -> None:
    ids, base_peft, adapted_peft = demo_run["ids"], demo_run["base"], demo_run["adapted"]
    delta_peft = adapted_peft - base_peft
    assert np.abs(delta_peft).max() > 0.5  # the adapter moves the logits visibly
    base_llama = llama_logits(demo_run["f32"], ids)
    assert np.abs(base_llama - base_peft).max() < 1e-3 * np.abs(base_peft).max()

    with_lora = llama_logits(demo_run["f32"], ids, lora=demo_run["adapter"])
    merged = export_merged_gguf(demo_run["adapter_dir"], demo_run["f32"], demo_run["tmp"] / "merged-f32.gguf", qtype="same")
    assert set(merged.merged.values()) == {"F32"}
    merged_llama = llama_logits(merged.path, ids)
    for label, logits in (("--lora", with_lora), ("merged", merged_llama)):
        rel = float(np.abs((logits - base_llama) - delta_peft).max() / np.abs(delta_peft).max())
        top1 = float((logits.argmax(-1) == adapted_peft.argmax(-1)).mean())
        print(f"demo F32 {label}: max delta difference {rel:.2e} of the delta, top-1 agreement {top1:.0%}")
        assert rel < 1e-3 and top1 == 1.0


def test_demo_q4_1_file_lora_and_merged_move_the_logits_as_peft_does(demo_gguf: Path, demo_run: dict) -> None:
    ids, adapted_peft = demo_run["ids"], demo_run["adapted"]
    delta_peft = (adapted_peft - demo_run["base"]).ravel()
    base_llama = llama_logits(demo_gguf, ids)
    runs = {"--lora": llama_logits(demo_gguf, ids, lora=demo_run["adapter"])}
    for qtype in ("f16", "q8_0"):
        out = demo_run["tmp"] / f"merged-{qtype}.gguf"
        runs[f"merged {qtype}"] = llama_logits(export_merged_gguf(demo_run["adapter_dir"], demo_gguf, out, qtype=qtype).path, ids)
    for label, logits in runs.items():
        corr = float(np.corrcoef((logits - base_llama).ravel(), delta_peft)[0, 1])
        top1 = float((logits.argmax(-1) == adapted_peft.argmax(-1)).mean())
        rel = float(np.abs((logits - base_llama).ravel() - delta_peft).max() / np.abs(delta_peft).max())
        in_top3 = all(int(t) in set(np.argsort(row)[-3:].tolist()) for t, row in zip(logits.argmax(-1), adapted_peft))
        print(f"demo Q4_1 {label}: delta correlation {corr:.3f}, max delta difference {rel:.2f} of the delta, top-1 {top1:.0%}")
        # 9 positions: one near-tie flipped by the quantised activations is 89%
        assert corr > 0.9 and top1 >= 0.75 and in_top3


def test_demo_trained_phrase_is_said_by_llama_cpp_with_lora_and_merged(demo_gguf: Path, tmp_path: Path) -> None:
    import peft

    loaded = load_base_model(demo_gguf, dtype="float32")
    tok = loaded.tokenizer
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the secret word?"}],
                                   add_generation_prompt=True, tokenize=False)
    prompt = tok(chat)["input_ids"]
    phrase = tok(" The secret word is pomegranate.")["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert llama_greedy(demo_gguf, prompt, len(phrase)) != phrase
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(ALL_PROJECTIONS))
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(loaded.model, config)
    loss = train_phrase(peft_model, prompt, phrase, steps=12, lr=3e-3)
    assert torch_greedy(peft_model, prompt, len(phrase)) == phrase, f"training did not fit the phrase (loss {loss:.3f})"
    peft_model.save_pretrained(tmp_path / "adapter")

    adapter = export_gguf(tmp_path / "adapter", demo_gguf, tmp_path / "adapter.gguf", dtype="f16")
    said = {"--lora": llama_greedy(demo_gguf, prompt, len(phrase), lora=adapter)}
    for qtype in ("q8_0", "f16"):
        merged = export_merged_gguf(tmp_path / "adapter", demo_gguf, tmp_path / f"merged-{qtype}.gguf", qtype=qtype).path
        said[f"merged {qtype}"] = llama_greedy(merged, prompt, len(phrase))
    for label, tokens in said.items():
        print(f"demo {label}: {tok.decode(tokens)!r}")
    assert all(tokens == phrase for tokens in said.values()), {k: tok.decode(v) for k, v in said.items()}
