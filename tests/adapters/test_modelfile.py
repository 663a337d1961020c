"""Ollama Modelfile: FROM/ADAPTER lines, chat template mapping per family, stop tokens, refusals."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from senior_intern.adapters.modelfile import chat_format, write_modelfile

TEMPLATES = {
    "chatml": ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}", "<|im_end|>"),
    "llama3": ("{{ '<|start_header_id|>' + m.role + '<|end_header_id|>' }}", "<|eot_id|>"),
    "gemma": ("{{ '<start_of_turn>' + role }}", "<end_of_turn>"),
    "phi3": ("{{ '<|user|>' }}{{ '<|assistant|>' }}", "<|end|>"),
    "mistral": ("{{ '[INST] ' + m.content + ' [/INST]' }}", "[INST]"),
}


def _gguf(path: Path, template: str | None, eos: str = "</s>") -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_token_list(["<unk>", "<s>", eos, "a"])
    writer.add_eos_token_id(2)
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_known_families_map_to_a_template_and_stops(tmp_path, family):
    jinja, stop = TEMPLATES[family]
    fmt = chat_format(_gguf(tmp_path / "b.gguf", jinja))
    assert fmt.family == family and fmt.template and "{{ .Prompt }}" in fmt.template
    assert fmt.stops == (stop, "</s>")


def test_unknown_template_gets_no_template_and_a_comment(tmp_path):
    base = _gguf(tmp_path / "b.gguf", "{{ messages }}")
    path, fmt = write_modelfile(tmp_path / "out", base, merged=tmp_path / "out" / "m.gguf")
    text = path.read_text()
    assert fmt.family is None and "TEMPLATE" not in text.replace("no TEMPLATE", "") and "no known Ollama mapping" in text
    assert text.splitlines()[0] == "FROM ./m.gguf" and 'PARAMETER stop "</s>"' in text


def test_adapter_form_quotes_and_refusals(tmp_path):
    base = _gguf(tmp_path / "b.gguf", TEMPLATES["chatml"][0], eos='<"end">')
    path, _ = write_modelfile(tmp_path, base, adapter=tmp_path / "a.gguf")
    lines = path.read_text().splitlines()
    assert lines[:2] == ["FROM ./b.gguf", "ADAPTER ./a.gguf"] and lines[2].startswith('TEMPLATE """')
    assert 'PARAMETER stop "<\\"end\\">"' in lines
    with pytest.raises(FileExistsError, match="--force"):
        write_modelfile(tmp_path, base, adapter=tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="exactly one"):
        write_modelfile(tmp_path, base, overwrite=True)
