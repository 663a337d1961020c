"""Merged export: a Hugging Face folder that reloads with transformers and matches base + adapter."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from senior_intern.adapters.merge import gguf_convert_hint, merge_adapter, read_peft_adapter
from tests.adapters.conftest import save_peft_adapter
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

INPUT_IDS = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 3], [1, 2, 3, 4, 5, 6, 7, 8]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def _reload(folder: Path, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith(".partial")]


def test_merged_folder_reloads_with_the_adapters_logits(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    peft_model = save_peft_adapter(make_tiny_llama(), adapter, r=8, lora_alpha=16)
    out = merge_adapter(adapter, tiny_base_dir, tmp_path / "merged")

    assert out == tmp_path / "merged"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    merged = _reload(out)
    torch.testing.assert_close(_logits(merged), _logits(peft_model), atol=1e-4, rtol=0)
    assert not torch.allclose(_logits(merged), _logits(_reload(tiny_base_dir)), atol=1e-3), "the adapter matters"
    from transformers import AutoTokenizer

    text = "def add(a, b):"
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == AutoTokenizer.from_pretrained(tiny_base_dir)(text).input_ids
    assert _leftovers(tmp_path) == []


def test_rslora_and_per_layer_patterns_match_peft(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    peft_model = save_peft_adapter(
        make_tiny_llama(),
        adapter,
        r=8,
        lora_alpha=4,
        use_rslora=True,
        alpha_pattern={"k_proj": 12},
        rank_pattern={"layers.0.mlp.up_proj": 2},
    )
    merged = _reload(merge_adapter(adapter, tiny_base_dir, tmp_path / "merged"))
    torch.testing.assert_close(_logits(merged), _logits(peft_model), atol=1e-4, rtol=0)


def test_rslora_and_rank_pattern_merge_to_peft_merge_and_unload_weights(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    peft_model = save_peft_adapter(
        make_tiny_llama(),
        adapter,
        r=8,
        lora_alpha=4,
        use_rslora=True,
        rank_pattern={"layers.0.mlp.up_proj": 2, "v_proj": 3},
        alpha_pattern={"layers.1.self_attn.o_proj": 20},
    )
    modules = {m.module: m for m in read_peft_adapter(adapter).modules}
    assert modules["model.layers.0.mlp.up_proj"].rank == 2 and modules["model.layers.1.self_attn.v_proj"].rank == 3
    assert modules["model.layers.1.self_attn.o_proj"].scale == pytest.approx(20 / 8**0.5)
    out = merge_adapter(adapter, tiny_base_dir, tmp_path / "merged")

    expected = peft_model.merge_and_unload().state_dict()
    merged = load_file(out / "model.safetensors")
    assert set(merged) <= set(expected) and "model.layers.0.mlp.up_proj.weight" in merged
    for key, tensor in merged.items():
        torch.testing.assert_close(tensor, expected[key].detach(), atol=1e-6, rtol=1e-6, msg=key)
    base = load_file(tiny_base_dir / "model.safetensors")
    changed = {k for k in merged if not torch.equal(merged[k], base[k])}
    assert changed == {f"{m}.weight" for m in modules}, "exactly the adapted layers change"


def test_bfloat16_output(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    peft_model = save_peft_adapter(make_tiny_llama(), adapter)
    out = merge_adapter(adapter, tiny_base_dir, tmp_path / "merged", dtype="bfloat16")

    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        q = handle.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert q.dtype == torch.bfloat16
    expected = peft_model.merge_and_unload().model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(q.float(), expected.detach(), atol=1e-2, rtol=1e-2)


def test_nan_in_adapter_refuses_and_leaves_nothing(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"][3, 1] = float("nan")
    save_file(tensors, weights)

    out = tmp_path / "merged"
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.down_proj.*NaN or Inf.*nothing was written"):
        merge_adapter(adapter, tiny_base_dir, out)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_float16_overflow_is_refused(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors["base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight"] *= 1e7
    save_file(tensors, weights)

    merge_adapter(adapter, tiny_base_dir, tmp_path / "merged32")  # fine in float32
    with pytest.raises(ValueError, match=r"o_proj.*NaN or Inf.*float16"):
        merge_adapter(adapter, tiny_base_dir, tmp_path / "merged16", dtype="float16")
    assert not (tmp_path / "merged16").exists()


def test_output_folder_rules(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        merge_adapter(adapter, tiny_base_dir, occupied)
    assert (occupied / "keep.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (merge_adapter(adapter, tiny_base_dir, empty) / "config.json").is_file()
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16"):
        merge_adapter(adapter, tiny_base_dir, tmp_path / "x", dtype="int8")


def test_refuses_wrong_or_quantised_base(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    with pytest.raises(FileNotFoundError, match="Base model not found"):
        merge_adapter(adapter, tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        merge_adapter(adapter, tmp_path, tmp_path / "out")

    config_path = tiny_base_dir / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(ValueError, match="quantised checkpoint"):
        merge_adapter(adapter, tiny_base_dir, tmp_path / "out")

    wider = tmp_path / "wider"
    make_tiny_llama(hidden_size=128).save_pretrained(wider)
    with pytest.raises(ValueError, match="tokenizer could not be loaded"):
        merge_adapter(adapter, wider, tmp_path / "out")
    make_tiny_tokenizer().save_pretrained(wider)
    with pytest.raises(ValueError, match="another model"):
        merge_adapter(adapter, wider, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("new_name", "message"),
    [("layers.7.mlp.up_proj", r"no layer 'model\.layers\.7\.mlp\.up_proj'"), ("layers.0.input_layernorm", "LlamaRMSNorm")],
)
def test_refuses_layers_the_base_lacks(tmp_path, tiny_base_dir, new_name, message):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({key.replace("layers.1.mlp.up_proj", new_name): value for key, value in tensors.items()}, weights)
    with pytest.raises(ValueError, match=message):
        merge_adapter(adapter, tiny_base_dir, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_refuses_tied_lm_head(tmp_path):
    base = tmp_path / "tied"
    make_tiny_llama(tie_word_embeddings=True).save_pretrained(base)
    make_tiny_tokenizer().save_pretrained(base)
    adapter = tmp_path / "adapter"
    peft_model = save_peft_adapter(make_tiny_llama(tie_word_embeddings=True), adapter, target_modules=["lm_head"])
    peft_model.save_pretrained(adapter, save_embedding_layers=False)
    with pytest.raises(ValueError, match=r"Cannot merge lm_head: lm_head shares its weight with model\.embed_tokens\.weight \(tied\)"):
        merge_adapter(adapter, base, tmp_path / "merged")


def test_reader_refusals(tmp_path):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())

    assert len(read_peft_adapter(adapter).modules) == 14
    for patch, message in (
        ({"peft_type": "IA3"}, "only LORA adapters"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "lora_only"}, "trains biases"),
        ({"r": "eight"}, "'r' must be a number"),
        ({"modules_to_save": ["lm_head"]}, "fully trained modules"),
        ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ):
        config_path.write_text(json.dumps({**config, **patch}))
        with pytest.raises(ValueError, match=message):
            read_peft_adapter(adapter)
    config_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_peft_adapter(adapter)
    config_path.write_text(json.dumps(config))

    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    q_b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    for extra, message in (
        ({q_b: torch.zeros(64, 3)}, r"mismatched shapes A \(4, 64\) and B \(64, 3\)"),
        ({"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(4, 300)}, "embeddings"),
        ({"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": torch.zeros(64)}, "DoRA"),
    ):
        save_file({**tensors, **extra}, weights)
        with pytest.raises(ValueError, match=message):
            read_peft_adapter(adapter)
    save_file({}, weights)
    with pytest.raises(ValueError, match="no LoRA tensors"):
        read_peft_adapter(adapter)
    del tensors[q_b]
    save_file(tensors, weights)
    with pytest.raises(ValueError, match="q_proj' has lora_A but not its partner"):
        read_peft_adapter(adapter)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="only safetensors adapters"):
        read_peft_adapter(adapter)
    config_path.unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json is missing"):
        read_peft_adapter(adapter)


def test_gguf_convert_hint(tmp_path):
    folder = tmp_path / "my merged model"
    words = shlex.split(gguf_convert_hint(folder))
    assert words == [
        "python",
        "convert_hf_to_gguf.py",
        str(folder),
        "--outfile",
        str(tmp_path / "my merged model.gguf"),
        "--outtype",
        "f16",
    ]


def test_merge_reports_progress_and_a_cancel_leaves_nothing(tmp_path, tiny_base_dir):
    adapter = tmp_path / "adapter"
    save_peft_adapter(make_tiny_llama(), adapter)
    layers = len(read_peft_adapter(adapter).modules)
    seen: list[tuple[int, int]] = []
    merge_adapter(adapter, tiny_base_dir, tmp_path / "merged", on_progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, layers + 2) and seen[-1] == (layers + 1, layers + 2)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)

    class Cancelled(Exception):
        pass

    def cancel_halfway(done: int, total: int) -> None:
        if done > layers // 2:
            raise Cancelled

    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        merge_adapter(adapter, tiny_base_dir, out, on_progress=cancel_halfway)
    assert not out.exists() and _leftovers(tmp_path) == []
