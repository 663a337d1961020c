"""Token ids with labels: masked prompt tokens get ``-100``, trained tokens keep their id.

Each text segment is tokenised on its own (no special tokens added), so a trained span starts
on a token boundary exactly where generation would start at inference. Samples start with the
special tokens the tokenizer puts before text (e.g. BOS; chat templates write their own) and
end with EOS, trained, unless truncated at ``max_seq_length``.

Long text and code files are split into windows (``Encoder.windows``): each window is
``[prefix] [header] content [EOS on the last window]`` and at most ``max_seq_length`` tokens;
consecutive windows share ``overlap`` content tokens, which the later window sees as masked
context so that no token is trained twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from senior_intern.data.templates import Segment

IGNORE_INDEX = -100
"""Label of a token the loss ignores (the prompt, padding, the first token of a packed sample)."""


@dataclass(frozen=True)
class Sample:
    """One training sequence: ``input_ids`` and ``labels`` (same length; -100 = not trained).

    ``source`` says where it came from: ``file:line`` for a record, ``path`` or
    ``path#windowN`` (1-based) for a text or code file. ``group`` is what the validation split
    keeps together: the windows of one file share their file's path; empty when the sample stands
    alone (``split_group`` is then its source).
    """

    input_ids: list[int]
    labels: list[int]
    source: str
    group: str = ""

    @property
    def split_group(self) -> str:
        """The key the validation split groups by: ``group``, else ``source``."""
        return self.group or self.source

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        """Tokens the loss sees: labels != -100 after the causal shift (the first token never is)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def special_prefix(tokenizer: Any) -> list[int]:
    """Ids the tokenizer adds before text with ``add_special_tokens=True`` (e.g. ``[bos]``; often empty)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i])
    return []


# More characters than any real token has: a text prefix of ``n * MAX_CHARS_PER_TOKEN`` characters
# always holds at least ``n`` tokens, so records longer than that are tokenised only that far.
MAX_CHARS_PER_TOKEN = 64


class Encoder:
    """Turns segments and files into ``Sample``s for one tokenizer and sequence length."""

    def __init__(self, tokenizer: Any, max_seq_length: int) -> None:
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must be at least 2 tokens, got {max_seq_length}")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.eos_id: int | None = tokenizer.eos_token_id
        self.prefix = special_prefix(tokenizer)

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without added special tokens (special-token strings in it are recognised)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, segments: Sequence[Segment], source: str, add_prefix: bool = True) -> tuple[Sample, bool]:
        """(sample, truncated) for ``segments``; EOS is appended (trained) when the last segment is trained
        and does not already end with it."""
        ids: list[int] = list(self.prefix) if add_prefix else []
        labels: list[int] = [IGNORE_INDEX] * len(ids)
        cut = False
        for text, trained in segments:
            room = self.max_seq_length + 1 - len(ids)  # one more token than fits marks the truncation
            if room <= 0:
                cut = True  # already full: later segments are not tokenised at all
                break
            if text is None:
                part = [self.eos_id] if self.eos_id is not None else []
            else:
                # A huge record (a 58 MB line) would be tokenised whole only to be cut: tokenise a prefix
                # that holds more than ``room`` tokens, at MAX_CHARS_PER_TOKEN characters a token at most.
                limit = room * MAX_CHARS_PER_TOKEN
                if len(text) > limit:
                    text, cut = text[:limit], True
                part = self.ids(text)
            ids += part
            labels += part if trained else [IGNORE_INDEX] * len(part)
        if segments and segments[-1][1] and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            labels.append(self.eos_id)
        truncated = cut or len(ids) > self.max_seq_length
        if truncated:
            ids, labels = ids[: self.max_seq_length], labels[: self.max_seq_length]
        return Sample(ids, labels, source), truncated

    def windows(self, text: str, source: str, header: str = "", overlap: int = 0) -> list[Sample]:
        """Samples of at most ``max_seq_length`` tokens covering ``text``; header and prefix masked."""
        head = list(self.prefix) + (self.ids(header) if header else [])
        eos = [self.eos_id] if self.eos_id is not None else []
        budget = self.max_seq_length - len(head) - len(eos)
        content = self.ids(text)
        if budget < 1 or (budget <= overlap and len(content) > budget):
            raise ValueError(
                f"{source}: max_seq_length {self.max_seq_length} leaves {max(budget, 0)} tokens per window after the "
                f"header, not more than window_overlap {overlap}; raise max_seq_length or lower window_overlap"
            )
        stride = budget - overlap
        starts = [0]
        while starts[-1] + budget < len(content):
            starts.append(starts[-1] + stride)
        samples = []
        for k, start in enumerate(starts):
            part = content[start:start + budget]
            last = k == len(starts) - 1
            context = overlap if k else 0
            ids = head + part + (eos if last else [])
            labels = [IGNORE_INDEX] * (len(head) + context) + part[context:] + (eos if last else [])
            name = source if len(starts) == 1 else f"{source}#window{k + 1}"
            samples.append(Sample(ids, labels, name, group=source))
        return samples
