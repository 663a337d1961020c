"""The dataset doctor: say what is wrong with the inputs in plain words, against the input at fault,
with one-click fixes.

``analyze(job)`` runs on a background thread: it loads the tokenizer first so that a model that
cannot be read is reported as a model problem (``ModelUnreadable``) and not as "the dataset could
not be read". ``diagnose(exc)`` turns the failure into a ``Diagnosis``: a short message and the
fixes that apply (skip the bad records, read the data as another format).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from senior_intern.config import DatasetFormat, TrainingJob
from senior_intern.gui import analysis
from senior_intern.gui.errors import describe_error

# Formats a user may pick by hand when detection fails, with the words shown on the buttons.
FORMAT_CHOICES = {
    DatasetFormat.PROMPT_COMPLETION: "prompt / completion",
    DatasetFormat.ALPACA: "instruction / input / output (Alpaca)",
    DatasetFormat.CHAT: "chat messages",
    DatasetFormat.TEXT: "plain text",
    DatasetFormat.CODE: "source code",
}
SHOWN_PROBLEMS = 3

# Field names datasets often use for what a format reads, by format: the doctor proposes a column
# map when a record's fields cover every field one format needs.
SYNONYMS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "prompt / completion": (("prompt", ("question", "query", "input", "q", "source", "user", "human", "context")),
                            ("completion", ("answer", "response", "output", "target", "a", "reply", "assistant", "gpt",
                                            "label", "solution"))),
    "text": (("text", ("content", "body", "document", "passage", "code", "article")),),
}


class ModelUnreadable(ValueError):
    """The base model (its tokenizer) could not be read, so the dataset cannot be checked."""


@dataclass(frozen=True)
class Fix:
    """A change to the job that may cure the problem: ``skip_malformed``, a ``format`` value, or a
    ``column_map`` (FROM=TO pairs) that renames the record's fields to ones a format reads."""

    label: str
    skip_malformed: bool = False
    format: str | None = None
    column_map: tuple[str, ...] = ()

    def apply(self, job: TrainingJob) -> None:
        """Make the change in ``job``."""
        if self.skip_malformed:
            job.data.skip_malformed = True
        if self.format is not None:
            job.data.format = DatasetFormat(self.format)
        if self.column_map:
            job.data.column_map = list(self.column_map)
            job.data.format = DatasetFormat.AUTO  # the renamed fields say the format


def column_map_for(fields: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """(format words, FROM=TO pairs) that make a record with ``fields`` readable, or None.

    The first format whose every needed field has exactly one synonym among ``fields`` wins;
    the match ignores case.
    """
    lower = {f.lower(): f for f in fields}
    for words, needed in SYNONYMS.items():
        pairs = []
        for target, names in needed:
            found = [lower[n] for n in names if n in lower]
            if len(found) != 1:
                break
            pairs.append(f"{found[0]}={target}")
        else:
            return words, tuple(pairs)
    return None


@dataclass(frozen=True)
class Diagnosis:
    """What to show: ``about`` is "model" or "dataset" (which input is at fault)."""

    about: str
    message: str
    fixes: list[Fix] = field(default_factory=list)


def analyze(job: TrainingJob, task: Any = None) -> analysis.DatasetAnalysis:
    """``analysis.analyze_dataset`` with the model read first, so its failure names the model.
    ``task`` (a ``TaskControl``) hears the records or files read as progress."""
    try:
        analysis.load_tokenizer(job.base_model_path)
    except Exception as exc:  # any failure here is the model's, whatever its type
        raise ModelUnreadable(describe_error(exc)) from exc
    return analysis.analyze_dataset(job, task.progress if task is not None else None)


def _plain(problem: object) -> str:
    source, message = getattr(problem, "source", ""), getattr(problem, "message", str(problem))
    return f"{Path(str(source)).name or source}: {message}" if source else str(message)


def diagnose(exc: BaseException, job: TrainingJob) -> Diagnosis:
    """Plain-words message and fixes for a failed analysis of ``job``."""
    if isinstance(exc, ModelUnreadable):
        return Diagnosis("model", f"This model cannot be read, so the dataset cannot be checked yet: {exc}")
    if isinstance(exc, FileNotFoundError):
        return Diagnosis("dataset", "The dataset file or folder is not there any more. Pick it again.")
    problems = list(getattr(exc, "problems", []) or [])
    name = Path(job.dataset_path).name or "The dataset"
    others = [Fix(f"Read it as {words}", format=fmt.value) for fmt, words in FORMAT_CHOICES.items() if fmt != job.data.format]
    if problems and not job.data.skip_malformed:
        count = len(problems)
        listed = "\n".join(f"• {_plain(p)}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n…and {count - SHOWN_PROBLEMS} more." if count > SHOWN_PROBLEMS else ""
        noun = "record" if count == 1 else "records"
        fixes = [Fix(f"Skip the {count} bad {noun}", skip_malformed=True), *others]
        shapes = {p.fields for p in problems if getattr(p, "fields", ())}
        mapped = column_map_for(next(iter(shapes))) if len(shapes) == 1 else None
        if mapped is not None and not job.data.column_map:
            words, pairs = mapped
            arrows = ", ".join(pair.replace("=", " → ") for pair in pairs)
            fixes.insert(0, Fix(f"Map {arrows} ({words})", column_map=pairs))
        return Diagnosis("dataset", f"{name}: {count} {noun} cannot be used:\n{listed}{more}", fixes)
    if getattr(exc, "empty", False):
        return Diagnosis("dataset", f"{name} gives no training samples in the format "
                                    f"'{DatasetFormat(job.data.format).value}'. Choose the format by hand:", others)
    return Diagnosis("dataset", f"{name} cannot be read: {describe_error(exc)}", others)
