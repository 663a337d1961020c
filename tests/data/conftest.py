"""Helpers for the data tests: tokenizer variants and a JSONL writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_tiny_tokenizer


@pytest.fixture(scope="session")
def plain_tokenizer():
    """The tiny tokenizer without a chat template (text templates are used)."""
    tok = make_tiny_tokenizer()
    tok.chat_template = None
    return tok


@pytest.fixture(scope="session")
def bos_tokenizer():
    """The tiny tokenizer without a chat template that puts BOS (<|im_start|>) before text."""
    from tokenizers import processors

    tok = make_tiny_tokenizer()
    tok.chat_template = None
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    return tok


def write_jsonl(path: Path, records: list) -> Path:
    """Write records (dicts, or raw strings written as they are) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ids(tok, text: str) -> list[int]:
    """Token ids of text without special tokens added."""
    return tok(text, add_special_tokens=False)["input_ids"]
