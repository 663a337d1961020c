"""``load_dataset``: a file or folder to tokenised ``Sample``s, with every problem reported.

What a path is read as (``DataConfig.format`` ``auto``):

* a ``.jsonl`` / ``.json`` file: records, each in the format its fields identify
  (``sources.record_format``); a forced format makes every record use it;
* a ``.txt`` / ``.md`` file: one text sample, split into windows when long;
* a source file or a folder: code (``code.walk_code``); every file is split into windows of
  ``max_seq_length`` tokens that overlap by ``window_overlap`` tokens, and each window starts
  with the masked header line ``CODE_HEADER`` (``File: <path relative to the folder>``);
* a folder with a forced record format (alpaca, prompt_completion, chat, text): every
  ``.jsonl`` / ``.json`` file in it (and ``.txt`` / ``.md`` for text), ``.gitignore`` honoured.

Problems (unreadable file, not UTF-8, malformed JSON, a record with none of the known fields,
a sample without trained tokens) name the file and line. With ``skip_malformed`` they are
skipped and counted; otherwise ``DatasetError`` lists the first few. An empty result always
raises ``DatasetError``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from senior_intern.config import DataConfig, DatasetFormat, TrainingJob
from senior_intern.data.code import iter_files, read_source, walk_code
from senior_intern.data.sources import (
    KNOWN_FIELDS_HELP,
    RECORD_SUFFIXES,
    TEXT_SUFFIXES,
    Problem,
    Record,
    detect_file_format,
    read_records,
    read_text,
    record_format,
)
from senior_intern.data.templates import RecordError, has_chat_template, record_segments
from senior_intern.data.tokenize import Encoder, Sample

PROGRESS_EVERY = 32  # records or files between two progress reports

CODE_HEADER = "File: {path}\n"
"""First line of every code window (masked): the file's path relative to the dataset folder."""

MAX_LISTED_PROBLEMS = 5


class DatasetError(ValueError):
    """The dataset cannot be used as it is; ``problems`` lists what is wrong and where, ``empty``
    says it gave no sample at all (rather than having records to fix)."""

    def __init__(self, message: str, problems: Sequence[Problem] = (), *, empty: bool = False) -> None:
        self.problems = list(problems)
        self.empty = empty
        if self.problems:
            message += "\n" + format_problems(self.problems)
        super().__init__(message)


def format_problems(problems: Sequence[Problem], limit: int = MAX_LISTED_PROBLEMS) -> str:
    """The first ``limit`` problems, one per line, and how many more there are."""
    lines = [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


@dataclass(frozen=True)
class DataMessage:
    """One line about a dataset load; ``lost`` when it reports data that will not be trained on
    (skipped records or files, truncated samples), which the run log shows as a warning."""

    text: str
    lost: bool = False

    def __str__(self) -> str:
        return self.text


@dataclass
class LoadedDataset:
    """The samples of a dataset and what happened while reading it."""

    path: Path
    samples: list[Sample]
    format: DatasetFormat
    max_seq_length: int
    records: int = 0  # records (or files, for text and code) read
    skipped: int = 0  # records or files dropped because of a problem
    truncated: int = 0  # samples cut at max_seq_length
    problems: list[Problem] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # code: (path, reason), e.g. binary
    ignored_files: int = 0  # code: excluded by .gitignore, vendored folders or the language filter
    template: str = ""  # how records were rendered
    unit: str = "records"  # what ``records`` counts: "records", or "files" for text and code files

    def summary_lines(self) -> list[str]:
        """Human-readable lines about the load (``summary()``'s texts)."""
        return [m.text for m in self.summary()]

    def summary(self) -> list[DataMessage]:
        """What the load did, a message per line; those about skipped or truncated data are ``lost``."""
        what = self.format.value + (f", {self.template}" if self.template else "")
        unit = self.unit
        lines = [DataMessage(f"Loaded {len(self.samples)} samples ({what}) from {self.path}: {self.records} {unit} read")]
        if self.skipped:
            lines.append(DataMessage(f"{self.skipped} {unit} skipped because of problems:\n{format_problems(self.problems)}", lost=True))
        if self.skipped_files:
            listed = ", ".join(f"{p} ({why})" for p, why in self.skipped_files[:MAX_LISTED_PROBLEMS])
            more = f" and {len(self.skipped_files) - MAX_LISTED_PROBLEMS} more" if len(self.skipped_files) > MAX_LISTED_PROBLEMS else ""
            lines.append(DataMessage(f"{len(self.skipped_files)} files skipped: {listed}{more}", lost=True))
        if self.truncated:
            lines.append(DataMessage(f"{self.truncated} samples truncated to max_seq_length {self.max_seq_length} tokens", lost=True))
        return lines


class _Builder:
    """Collects samples, problems and counts while the sources of one dataset are read."""

    def __init__(self, tokenizer: Any, cfg: DataConfig, max_seq_length: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.tokenizer = tokenizer
        self.progress = progress  # (done, total) records of a file, or files of a folder
        self.cfg = cfg
        self.renames = cfg.column_renames()  # {record field: the field it is read as}
        # No tokenizer: a check of the records only (``check_dataset``), nothing is tokenised.
        self.encoder = Encoder(tokenizer, max_seq_length) if tokenizer is not None else None
        self.samples: list[Sample] = []
        self.problems: list[Problem] = []
        self.formats: Counter[DatasetFormat] = Counter()
        self.records = self.skipped = self.truncated = 0
        self.skipped_files: list[tuple[str, str]] = []
        self.ignored_files = 0
        self.unit = "records"  # what ``records`` counts: records, or files for a text/code file or a code folder

    def read(self, path: Path, fmt: DatasetFormat) -> None:
        """Read ``path`` (file or folder) in format ``fmt`` (``auto``: decided from the path and records)."""
        if path.is_dir() and fmt in (DatasetFormat.AUTO, DatasetFormat.CODE):
            self.unit = "files"
            self.add_code_folder(path)
        elif path.is_dir():
            suffixes = RECORD_SUFFIXES + (TEXT_SUFFIXES if fmt == DatasetFormat.TEXT else ())
            for rel, file in iter_files(path):
                if file.suffix.lower() in RECORD_SUFFIXES:
                    self.add_records(file, rel, fmt)
                elif file.suffix.lower() in suffixes:
                    self.add_text_file(file, rel)
        else:
            kind = detect_file_format(path) if fmt == DatasetFormat.AUTO else fmt
            if kind == DatasetFormat.CODE:
                self.unit = "files"
                self.add_code_file(path, path.name)
            elif kind == DatasetFormat.TEXT and path.suffix.lower() not in RECORD_SUFFIXES:
                self.unit = "files"
                self.add_text_file(path, path.name)
            else:
                self.add_records(path, path.name, kind)

    def tick(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units read, every ``PROGRESS_EVERY`` and at the end."""
        if self.progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            self.progress(done, total)

    def problem(self, source: str, message: str, fields: tuple[str, ...] = ()) -> None:
        self.problems.append(Problem(source, message, fields))
        self.skipped += 1

    def renamed(self, record: Record) -> Any:
        """The record's data with ``column_map`` applied; None (and a problem) when a rename would
        overwrite a field the record already has."""
        data = record.data
        if not self.renames or not isinstance(data, dict):
            return data
        for source, target in self.renames.items():
            if source in data and target in data:
                self.problem(record.source, f"record has both {source!r} and {target!r}; the column map "
                                            f"{source}={target} would overwrite {target!r}")
                return None
        return {self.renames.get(k, k): v for k, v in data.items()}

    def add_records(self, path: Path, display: str, forced: DatasetFormat | None) -> None:
        records, problems = read_records(path, display)
        self.records += len(records) + len(problems)
        for p in problems:
            self.problem(p.source, p.message)
        for done, record in enumerate(records):
            self.tick(done, len(records))
            data = self.renamed(record)
            if data is None:
                continue
            fmt = forced or record_format(data)
            if fmt is None:
                fields = tuple(map(str, data)) if isinstance(data, dict) else ()
                keys = ", ".join(fields) if isinstance(data, dict) else type(data).__name__
                self.problem(record.source, f"record has none of the known fields ({KNOWN_FIELDS_HELP}); it has: "
                                            f"{keys or 'nothing'}", fields)
                continue
            try:
                segments = record_segments(data, fmt, self.tokenizer)
            except RecordError as exc:
                self.problem(record.source, str(exc))
                continue
            if self.encoder is None:  # a check: the record would give a sample
                self.formats[fmt] += 1
                continue
            templated = fmt != DatasetFormat.TEXT and has_chat_template(self.tokenizer)
            sample, truncated = self.encoder.encode(segments, record.source, add_prefix=not templated)
            if self._keep(sample, truncated):
                self.formats[fmt] += 1
        self.tick(len(records), len(records))

    def _keep(self, sample: Sample, truncated: bool) -> bool:
        if sample.n_trained == 0:
            why = f" (the response was cut off at max_seq_length {self.encoder.max_seq_length}; shorten the prompt or raise max_seq_length)" if truncated else ""
            self.problem(sample.source, f"no trained tokens{why}")
            return False
        self.samples.append(sample)
        self.truncated += truncated
        return True

    def add_text_file(self, path: Path, display: str) -> None:
        self.records += 1
        text, problem = read_text(path, display)
        if problem is not None:
            self.problem(problem.source, problem.message)
        elif text.strip():
            self.add_windows(text, display, "", DatasetFormat.TEXT)

    def add_code_folder(self, root: Path) -> None:
        walk = walk_code(root, self.cfg.code_extensions, self.cfg.max_file_bytes)
        self.skipped_files, self.ignored_files = walk.skipped, walk.ignored
        self.records += len(walk.files)
        for done, f in enumerate(walk.files):
            self.tick(done, len(walk.files))
            self.add_windows(f.text, f.rel_path, CODE_HEADER.format(path=f.rel_path), DatasetFormat.CODE)
        self.tick(len(walk.files), len(walk.files))

    def add_code_file(self, path: Path, display: str) -> None:
        self.records += 1
        text, reason = read_source(path, self.cfg.max_file_bytes)
        if text is None:
            self.problem(display, f"cannot train on this file: {reason}")
        elif text.strip():
            self.add_windows(text, display, CODE_HEADER.format(path=display), DatasetFormat.CODE)

    def add_windows(self, text: str, display: str, header: str, fmt: DatasetFormat) -> None:
        if self.encoder is None:
            self.formats[fmt] += 1
            return
        for sample in self.encoder.windows(text, display, header, self.cfg.window_overlap):
            if self._keep(sample, False):
                self.formats[fmt] += 1


def load_dataset(
    path: str | Path, tokenizer: Any, data_cfg: DataConfig | None = None, max_seq_length: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> LoadedDataset:
    """Read and tokenise the dataset at ``path`` (file or folder) for ``tokenizer``.

    ``progress(done, total)`` hears how far the reading is: records of a record file, files of a
    code folder (every ``PROGRESS_EVERY`` and at the end of each file or folder).

    Raises ``FileNotFoundError`` when the path does not exist, ``DatasetError`` (a ValueError)
    listing file:line problems when it has problems and ``skip_malformed`` is off, or when no
    sample is left.
    """
    path, b = _read(path, tokenizer, data_cfg or DataConfig(), max_seq_length, progress)
    return LoadedDataset(
        path=path, samples=b.samples, format=b.formats.most_common(1)[0][0], max_seq_length=max_seq_length,
        records=b.records, skipped=b.skipped, truncated=b.truncated, problems=b.problems,
        skipped_files=b.skipped_files, ignored_files=b.ignored_files, template=_template_name(tokenizer, b.formats),
        unit=b.unit,
    )


def check_dataset(path: str | Path, data_cfg: DataConfig | None = None) -> None:
    """Refuse, before any tokenizer or model is loaded, a dataset that ``load_dataset`` would refuse
    for its records: a missing path, unreadable or non-UTF-8 files, malformed JSON, records with none
    of the known fields (unless ``skip_malformed``), or nothing to train on. Seconds, where a model
    load takes a minute. What needs tokens (a response cut off by max_seq_length) is found later."""
    _read(path, None, data_cfg or DataConfig(), 2)


def _read(path: str | Path, tokenizer: Any, cfg: DataConfig, max_seq_length: int,
          progress: Callable[[int, int], None] | None = None) -> tuple[Path, _Builder]:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Dataset not found: {path}")
    fmt = DatasetFormat(cfg.format)
    b = _Builder(tokenizer, cfg, max_seq_length, progress)
    b.read(path, fmt)
    if b.problems and not cfg.skip_malformed:
        raise DatasetError(
            f"{path}: {len(b.problems)} problem(s) in the dataset; fix them, or set skip_malformed "
            "(--skip-malformed) to skip those records",
            b.problems,
        )
    if not b.formats:  # one count per kept sample (or, for a check, per record or file that would give one)
        raise DatasetError(f"{path}: the dataset is empty: {_why_empty(path, fmt, b)}", b.problems, empty=True)
    return path, b


def _template_name(tokenizer: Any, formats: Counter) -> str:
    if not any(f in formats for f in (DatasetFormat.ALPACA, DatasetFormat.PROMPT_COMPLETION, DatasetFormat.CHAT)):
        return ""
    return "chat template" if has_chat_template(tokenizer) else "text template"


def _why_empty(path: Path, fmt: DatasetFormat, b: _Builder) -> str:
    if b.problems:
        return f"all {b.skipped} records or files had problems"
    if path.is_dir() and fmt in (DatasetFormat.AUTO, DatasetFormat.CODE):
        found = f"no source files to train on ({b.ignored_files} files excluded by .gitignore, vendored folders or the language filter"
        return found + (f", {len(b.skipped_files)} skipped: binary, too large or not UTF-8)" if b.skipped_files else ")")
    return "no records or text found; add training examples"


def split(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Deterministic (train, validation) split holding out about ``fraction`` of the samples.

    Windows of the same file stay on the same side (their overlap would leak otherwise) when
    that still gives a validation set; both sides keep the original order. With ``fraction``
    > 0 and at least two samples, validation gets at least one and train keeps at least one.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    n = len(samples)
    target = round(n * fraction)
    if fraction > 0 and n >= 2:
        target = min(max(target, 1), n - 1)
    else:
        target = 0
    if target == 0:
        return list(samples), []
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.split_group, []).append(i)
    order = sorted(groups)
    rng = random.Random(seed)
    rng.shuffle(order)
    held: set[int] = set()
    for key in order:
        if len(held) + len(groups[key]) <= target:
            held.update(groups[key])
    if not held:  # every file is longer than the validation share: split windows instead
        indices = list(range(n))
        rng.shuffle(indices)
        held = set(indices[:target])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


@dataclass
class TrainingData:
    """What a training run needs from the data: train and validation samples and lines to log."""

    train: list[Sample]
    validation: list[Sample]
    dataset: LoadedDataset
    validation_dataset: LoadedDataset | None
    messages: list[DataMessage]


def check_training_data(job: TrainingJob) -> None:
    """``check_dataset`` for the job's dataset and validation data: run before the model loads."""
    check_dataset(job.dataset_path, job.data)
    if job.validation_path:
        check_dataset(job.validation_path, job.data)


def load_training_data(job: TrainingJob, tokenizer: Any) -> TrainingData:
    """Load ``job.dataset_path`` and the validation data: ``job.validation_path`` when set,
    otherwise a ``job.validation_split`` share held out with ``job.training.seed``."""
    max_len = job.training.max_seq_length
    data = load_dataset(job.dataset_path, tokenizer, job.data, max_len)
    messages = data.summary()
    val_data = None
    if job.validation_path:
        val_data = load_dataset(job.validation_path, tokenizer, job.data, max_len)
        train, validation = data.samples, val_data.samples
        messages += [DataMessage("Validation: " + m.text, m.lost) for m in val_data.summary()]
    else:
        train, validation = split(data.samples, job.validation_split, job.training.seed)
        if job.validation_split > 0:
            messages.append(DataMessage(f"Held out {len(validation)} of {len(data.samples)} samples for validation (seed {job.training.seed})"))
    return TrainingData(train, validation, data, val_data, messages)
