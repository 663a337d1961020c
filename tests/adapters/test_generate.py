"""Try an adapter: one trained to answer a fixed phrase says it; the base model does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from senior_intern.adapters.generate import attach_adapter, generate, load_for_playground, lora_config_from_peft
from senior_intern.config import TrainingJob
from senior_intern.training.engine import Trainer

PHRASE = "hello world"


@pytest.fixture(scope="module")
def phrase_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import write_tiny_model

    root = tmp_path_factory.mktemp("phrase")
    model = write_tiny_model(root / "model")
    data = root / "data.jsonl"
    prompts = ["def add", "class Point", "print self", "import os", "return a", "quick brown fox", "lazy dog", "say hi"]
    data.write_text("".join(json.dumps({"instruction": p, "input": "", "output": PHRASE}) + "\n" for p in prompts * 4))
    job = TrainingJob(name="phrase", base_model_path=str(model), dataset_path=str(data), output_dir=str(root / "runs"),
                      adapters_dir=str(root / "lib"), validation_split=0.0)
    t = job.training
    t.epochs, t.batch_size, t.max_seq_length, t.learning_rate, t.warmup_steps = 40, 8, 64, 1e-2, 5
    t.device, t.dtype, t.eval_every, t.save_every, t.early_stopping_patience = "cpu", "float32", 0, 0, 0
    job.lora.rank, job.lora.alpha, job.lora.dropout, job.lora.target_modules = 8, 16.0, 0.0, ["all-linear"]
    result = Trainer().run(job)
    assert result.success, result.error_message
    return model, Path(result.adapter_path)


def test_adapter_answers_with_the_phrase_and_base_does_not(phrase_adapter) -> None:
    model, adapter = phrase_adapter
    play = load_for_playground(model, adapter)
    pieces: list[str] = []
    with_adapter = play.generate("def add", True, max_new_tokens=8, on_token=pieces.append)
    assert with_adapter.strip() == PHRASE
    assert "".join(pieces) == with_adapter  # streamed in pieces that add up to the answer
    assert play.generate("a prompt it never saw", True, max_new_tokens=8).strip() == PHRASE
    base = play.generate("def add", False, max_new_tokens=8)
    assert base.strip() != PHRASE


def test_generation_stops_when_asked(phrase_adapter) -> None:
    model, adapter = phrase_adapter
    play = load_for_playground(model, adapter)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    stopped = play.generate("def add", True, max_new_tokens=8, should_stop=should_stop)
    assert stopped and PHRASE.startswith(stopped) and len(stopped) < len(PHRASE)  # one token, then stopped
    with pytest.raises(ValueError):
        generate(play.model, play.tokenizer, "x", max_new_tokens=0)


def test_sampling_and_errors(phrase_adapter, tmp_path: Path) -> None:
    model, adapter = phrase_adapter
    base_only = load_for_playground(model)
    text = base_only.generate("def add", False, max_new_tokens=4, temperature=1.0, seed=3)
    assert isinstance(text, str)
    with pytest.raises(ValueError, match="No adapter"):
        base_only.generate("x", True)
    with pytest.raises(FileNotFoundError, match="Not an adapter folder"):
        attach_adapter(base_only.model, tmp_path)
    with pytest.raises(ValueError, match="DoRA"):
        lora_config_from_peft({"r": 4, "use_dora": True})
    assert lora_config_from_peft({"r": 4, "target_modules": "q_proj", "bias": "weird"}).target_modules == ["q_proj"]


def test_playground_loads_on_the_recommended_device(monkeypatch, tmp_path):
    """The playground generates where training would run (a GPU when there is one), not always the CPU."""
    import types

    import senior_intern.models as models
    from senior_intern.adapters import generate as gen
    from senior_intern.hardware import detect

    asked = []
    monkeypatch.setattr(detect, "recommended_device", lambda: "cuda:1")
    monkeypatch.setattr(models, "load_base_model",
                        lambda path, device="cpu", dtype=None, progress=None: asked.append(device) or types.SimpleNamespace(model="m", tokenizer="t", info=None))
    play = gen.load_for_playground(tmp_path)
    assert asked == ["cuda:1"] and play.model == "m"
    gen.load_for_playground(tmp_path, device="cpu")
    assert asked[-1] == "cpu"


def test_stop_reasons_tokens_per_second_and_sampling_settings(phrase_adapter) -> None:
    from senior_intern.adapters.generate import STOP_BY_USER, STOP_END_OF_TEXT, STOP_MAX_TOKENS, build_prompt, generate_detailed

    model, adapter = phrase_adapter
    play = load_for_playground(model, adapter)
    play.lora.enable()
    short = generate_detailed(play.model, play.tokenizer, "def add", max_new_tokens=2)
    assert short.stop_reason == STOP_MAX_TOKENS and short.tokens == 2 and short.tokens_per_second > 0
    assert "reached the max new tokens" in short.summary() and "tokens/s" in short.summary()
    full = generate_detailed(play.model, play.tokenizer, "def add", max_new_tokens=30)
    assert full.stop_reason == STOP_END_OF_TEXT and full.text.strip() == PHRASE and full.tokens < 30
    stopped = generate_detailed(play.model, play.tokenizer, "def add", max_new_tokens=30, should_stop=lambda: True)
    assert stopped.stop_reason == STOP_BY_USER and stopped.tokens == 0
    # a tiny nucleus keeps only the most likely token: the same as greedy, whatever the seed
    greedy = generate_detailed(play.model, play.tokenizer, "def add", max_new_tokens=6).text
    for seed in (1, 2):
        assert generate_detailed(play.model, play.tokenizer, "def add", max_new_tokens=6, temperature=1.5, top_p=1e-6, seed=seed).text == greedy
    with pytest.raises(ValueError, match="top_p"):
        generate_detailed(play.model, play.tokenizer, "x", top_p=0.0)
    plain, with_system = build_prompt(play.tokenizer, "def add"), build_prompt(play.tokenizer, "def add", "Be brief.")
    assert len(with_system) > len(plain) and with_system != plain


def test_both_answers_advance_together_and_match_separate_runs(phrase_adapter) -> None:
    model, adapter = phrase_adapter
    play = load_for_playground(model, adapter)
    order: list[str] = []
    done: dict[str, object] = {}
    results = play.generate_together("def add", {"base": False, "adapter": True}, max_new_tokens=8,
                                     on_token=lambda side, piece: order.append(side), on_done=done.__setitem__)
    assert results["adapter"].text.strip() == PHRASE
    assert results["base"].text == play.generate("def add", False, max_new_tokens=8)  # no cross-talk between the sides
    assert set(done) == {"base", "adapter"}
    first_adapter = order.index("adapter")
    assert first_adapter < len(order) - 1 and "base" in order[first_adapter:]  # interleaved, not one after the other


def test_the_playground_refuses_a_base_too_big_for_the_free_memory_before_loading(phrase_adapter, monkeypatch) -> None:
    import senior_intern.models as models
    from senior_intern.hardware import detect
    from senior_intern.models.holding import base_holding

    model, _ = phrase_adapter
    weights = base_holding(model).memory_bytes(4)  # float32 on the CPU
    monkeypatch.setattr(detect, "free_memory", lambda device: weights // 2)
    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=rf"{model} does not fit: its weights alone take .* held as dense floats .*"
                                         r"this machine has .* free\. To use it, open it from a GGUF file"):
        load_for_playground(model, device="cpu")
