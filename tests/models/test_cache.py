"""The GGUF conversion cache and the content-hash cache, with a tiny Llama written as GGUF."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from senior_intern import paths
from senior_intern.models import cache, content_hash, load_base_model, metadata
from senior_intern.models.hashing import INDEX_NAME, hash_file_content
from tests.conftest import make_tiny_llama, make_tiny_tokenizer
from tests.models.conftest import write_tiny_gguf

TEXT = "class Point:\n    def __init__(self, x, y):\n"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test starts with an empty model cache (the tiny GGUF has the same hash in every test)."""
    monkeypatch.setenv("SENIOR_INTERN_HOME", str(tmp_path / "home"))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits  # (1, seq, vocab)


def test_tiny_gguf_converts_once_and_matches_the_original(tiny_gguf):
    digest = content_hash(tiny_gguf)
    assert cache.cached_conversion(digest) is None
    loaded = load_base_model(tiny_gguf)
    folder = cache.cached_conversion(digest)
    assert folder == paths.model_cache_dir() / digest
    record = json.loads((folder / cache.SOURCE_FILE).read_text())
    stat = tiny_gguf.stat()
    assert record["source"] == str(tiny_gguf.resolve())
    assert (record["size"], record["mtime_ns"], record["hash"]) == (stat.st_size, stat.st_mtime_ns, digest)
    assert {"config.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.safetensors"))  # no float copy of the weights: they stay in the GGUF
    assert loaded.info.base_held == "gguf"
    assert not [p for p in paths.model_cache_dir().iterdir() if p.name.startswith(cache.TMP_PREFIX)]
    ids = make_tiny_tokenizer()(TEXT, return_tensors="pt").input_ids
    assert loaded.tokenizer(TEXT, return_tensors="pt").input_ids.tolist() == ids.tolist()
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(make_tiny_llama(), ids), rtol=1e-5, atol=1e-5)
    info = loaded.info
    assert (info.source_format, info.quantization, info.path) == ("gguf", "F32", tiny_gguf.resolve())
    assert info.has_chat_template and loaded.tokenizer.chat_template
    mtime = (folder / "config.json").stat().st_mtime_ns
    again = load_base_model(tiny_gguf)
    assert (folder / "config.json").stat().st_mtime_ns == mtime  # not converted again
    torch.testing.assert_close(_logits(again.model, ids), _logits(loaded.model, ids), rtol=0, atol=0)


def test_changed_gguf_gets_a_new_entry_and_the_stale_one_is_removed(tiny_gguf):
    old_digest = content_hash(tiny_gguf)
    load_base_model(tiny_gguf)
    old_folder = cache.cached_conversion(old_digest)
    write_tiny_gguf(tiny_gguf, seed=1)  # same size, new weights
    new_digest = content_hash(tiny_gguf)
    assert new_digest != old_digest
    loaded = load_base_model(tiny_gguf)
    assert loaded.info.content_hash == new_digest
    assert cache.cached_conversion(new_digest) is not None
    assert not old_folder.exists()
    ids = make_tiny_tokenizer()(TEXT, return_tensors="pt").input_ids
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(make_tiny_llama(seed=1), ids), rtol=1e-5, atol=1e-5)


def test_same_size_and_content_change_is_seen_through_the_mtime(tiny_gguf):
    before = content_hash(tiny_gguf)
    data = bytearray(tiny_gguf.read_bytes())
    data[-1] ^= 0xFF  # flip bits of the last weight
    stat = tiny_gguf.stat()
    tiny_gguf.write_bytes(bytes(data))
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = content_hash(tiny_gguf)
    assert after != before
    assert after == hash_file_content(tiny_gguf)


def test_hash_is_remembered_by_size_and_mtime(tiny_gguf):
    digest = content_hash(tiny_gguf)
    index = json.loads((paths.model_cache_dir() / INDEX_NAME).read_text())
    entry = index[str(tiny_gguf.resolve())]
    assert entry == {"size": tiny_gguf.stat().st_size, "mtime_ns": tiny_gguf.stat().st_mtime_ns, "hash": digest}
    # The remembered value is what a second call returns, without reading the file again.
    entry["hash"] = "remembered"
    (paths.model_cache_dir() / INDEX_NAME).write_text(json.dumps(index))
    assert content_hash(tiny_gguf) == "remembered"
    os.utime(tiny_gguf, ns=(tiny_gguf.stat().st_atime_ns, tiny_gguf.stat().st_mtime_ns + 1))
    assert content_hash(tiny_gguf) == digest


def test_damaged_hash_index_is_rebuilt(tiny_gguf):
    digest = content_hash(tiny_gguf)
    (paths.model_cache_dir() / INDEX_NAME).write_text("{broken")
    assert content_hash(tiny_gguf) == digest
    assert json.loads((paths.model_cache_dir() / INDEX_NAME).read_text())[str(tiny_gguf.resolve())]["hash"] == digest


def test_damaged_cache_entry_is_rebuilt(tiny_gguf):
    digest = content_hash(tiny_gguf)
    load_base_model(tiny_gguf)
    config = cache.cached_conversion(digest) / "config.json"
    size = config.stat().st_size
    config.write_bytes(config.read_bytes()[:20])
    loaded = load_base_model(tiny_gguf)
    assert config.stat().st_size == size
    ids = make_tiny_tokenizer()(TEXT, return_tensors="pt").input_ids
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(make_tiny_llama(), ids), rtol=1e-5, atol=1e-5)


def test_abandoned_temporary_folders_are_pruned(tiny_gguf):
    root = paths.model_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    old = root / f"{cache.TMP_PREFIX}crashed"
    old.mkdir()
    day_ago = time.time() - cache.ABANDONED_TMP_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    fresh = root / f"{cache.TMP_PREFIX}converting-now"
    fresh.mkdir()
    removed = cache.prune_stale(tiny_gguf.resolve(), keep=content_hash(tiny_gguf))
    assert old in removed and not old.exists()
    assert fresh.exists()


def test_metadata_of_tiny_gguf(tiny_gguf):
    info = metadata(tiny_gguf)
    model = make_tiny_llama()
    assert (info.architecture, info.model_type) == ("LlamaForCausalLM", "llama")
    assert (info.dtype, info.quantization) == ("float32", "F32")
    assert info.parameter_count == sum(p.numel() for p in model.parameters())
    assert (info.vocab_size, info.context_length, info.hidden_size, info.num_layers) == (300, 256, 64, 2)
    assert (info.num_attention_heads, info.num_kv_heads, info.tie_word_embeddings) == (4, 2, False)
    assert info.file_size == tiny_gguf.stat().st_size
