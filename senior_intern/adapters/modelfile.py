"""An Ollama ``Modelfile`` for an exported GGUF: ``FROM``, ``ADAPTER``, ``TEMPLATE`` and stop tokens.

The chat template is read from the base GGUF's ``tokenizer.chat_template`` (a Jinja template)
and converted to Ollama's Go template where its family is recognised by its turn markers
(ChatML, Llama 3, Gemma, Mistral ``[INST]``, Phi-3). An unknown template gets no ``TEMPLATE``
line and a comment saying so (Ollama then sends the prompt as it is). Stop tokens are the
family's end-of-turn marker and the tokenizer's end-of-sequence token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

# (marker that identifies the family in the Jinja template, Ollama template, end-of-turn stop)
_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("chatml", "<|im_start|>",
     "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
     "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
     "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n", "<|im_end|>"),
    ("llama3", "<|start_header_id|>",
     "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
     "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
     "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>", "<|eot_id|>"),
    ("gemma", "<start_of_turn>",
     "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
     "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n", "<end_of_turn>"),
    ("phi3", "<|assistant|>",
     "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}"
     "{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>\n", "<|end|>"),
    ("mistral", "[INST]", "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]{{ .Response }}", "[INST]"),
)


@dataclass(frozen=True)
class ChatFormat:
    """The base model's chat family (``None`` when unknown), its Ollama template and stop strings."""

    family: str | None
    template: str | None
    stops: tuple[str, ...]


def chat_format(base_gguf: str | Path) -> ChatFormat:
    """Read the chat template and end-of-sequence token of a GGUF and map them to Ollama's terms."""
    reader = gguf.GGUFReader(base_gguf)

    def value(key: str):
        fld = reader.get_field(key)
        return None if fld is None else fld.contents()

    jinja = value(gguf.Keys.Tokenizer.CHAT_TEMPLATE) or ""
    tokens = value(gguf.Keys.Tokenizer.LIST) or []
    eos_id = value(gguf.Keys.Tokenizer.EOS_ID)
    stops: list[str] = []
    family = template = None
    for name, marker, go_template, stop in _FAMILIES:
        if marker in jinja:
            family, template = name, go_template
            stops.append(stop)
            break
    if isinstance(eos_id, int) and 0 <= eos_id < len(tokens) and tokens[eos_id].strip():
        stops.append(tokens[eos_id])
    return ChatFormat(family, template, tuple(dict.fromkeys(stops)))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_modelfile(
    folder: str | Path, base_gguf: str | Path, *, merged: str | Path | None = None,
    adapter: str | Path | None = None, overwrite: bool = False,
) -> tuple[Path, ChatFormat]:
    """Write ``folder/Modelfile``: ``FROM`` the merged GGUF, or ``FROM`` the base plus ``ADAPTER``.

    Exactly one of ``merged`` and ``adapter`` is given. Files inside ``folder`` are referred to
    relatively (``./name.gguf``, as Ollama resolves them from the Modelfile's folder), others by
    absolute path. An existing Modelfile is refused unless ``overwrite``. Returns its path and
    the chat format found.
    """
    if (merged is None) == (adapter is None):
        raise ValueError("give the merged GGUF or the adapter GGUF (exactly one)")
    folder = Path(folder)
    path = folder / "Modelfile"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --force to replace it")
    fmt = chat_format(base_gguf)

    def ref(file: str | Path) -> str:
        file = Path(file).resolve()
        return f"./{file.name}" if file.parent == folder.resolve() else str(file)

    lines = [f"FROM {ref(merged)}"] if merged is not None else [f"FROM {ref(base_gguf)}", f"ADAPTER {ref(adapter)}"]
    if fmt.template is not None:
        lines.append(f'TEMPLATE """{fmt.template}"""')
    else:
        lines.append("# The base's chat template has no known Ollama mapping: no TEMPLATE, prompts are sent as they are.")
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in fmt.stops]
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, fmt
