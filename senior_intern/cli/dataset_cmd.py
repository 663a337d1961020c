"""``senior-intern dataset inspect PATH``: how a dataset will be read and trained.

Prints the detected format, the counts (records, skipped, truncated), the token-length
statistics and histogram, the steps per epoch, and one sample with its masked (not trained)
tokens shown ``[[in double brackets]]``. Without ``--model`` the embedded demo model's tokenizer
is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from senior_intern.config import DataConfig, DatasetFormat, TrainingConfig, field_help

MASK_OPEN, MASK_CLOSE = "[[", "]]"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dataset`` command and its ``inspect`` sub-command."""
    parser = subparsers.add_parser("dataset", help="inspect a dataset", description="Look at a dataset before training on it.")
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "inspect",
        help="show the detected format, statistics and a sample with its masked tokens",
        description="Read a dataset (.jsonl/.json/.txt/.md file, source file or folder of code) as training "
        "would, and show its format, statistics and one sample; masked (not trained) tokens are shown "
        f"{MASK_OPEN}in double brackets{MASK_CLOSE}.",
    )
    p.add_argument("path", type=Path, help="dataset file or folder of code")
    p.add_argument("--model", type=Path, help="base model whose tokenizer to use: a Hugging Face folder or a .gguf file (default: the demo model)")
    p.add_argument("--format", choices=[f.value for f in DatasetFormat], default=DatasetFormat.AUTO.value, help=field_help(DataConfig, "format"))
    p.add_argument("--max-seq-length", type=int, default=TrainingConfig.max_seq_length, help=field_help(TrainingConfig, "max_seq_length"))
    p.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size, help=field_help(TrainingConfig, "batch_size"))
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=TrainingConfig.packing, help=field_help(TrainingConfig, "packing"))
    p.add_argument("--skip-malformed", action="store_true", help=field_help(DataConfig, "skip_malformed"))
    p.add_argument("--column-map", nargs="+", default=[], metavar="FROM=TO", help=field_help(DataConfig, "column_map"))
    p.add_argument("--extensions", nargs="+", default=[], metavar="EXT", help=field_help(DataConfig, "code_extensions"))
    p.add_argument("--window-overlap", type=int, default=DataConfig.window_overlap, help=field_help(DataConfig, "window_overlap"))
    p.add_argument("--sample", type=int, default=1, metavar="N", help="which sample to show (1-based, default 1)")
    p.set_defaults(func=inspect)


def load_tokenizer(model: Path | None) -> Any:
    """The tokenizer training would use for ``model`` (folder or .gguf), or for the embedded demo model
    when None; loaded through ``senior_intern.models`` so that it is the same one."""
    from senior_intern import models

    if model is None:
        model = models.find_demo_model()
        if model is None:
            raise FileNotFoundError("No --model given and the embedded demo model is not installed; pass --model PATH")
    model = Path(model).expanduser()
    if not model.exists():
        raise FileNotFoundError(f"Model not found: {model}")
    return models.load_tokenizer(model)  # the tokenizer files only, never the weights


def marked_text(pieces: list[tuple[str, bool]]) -> str:
    """Sample text with masked pieces wrapped in ``[[...]]``."""
    return "".join(text if trained else f"{MASK_OPEN}{text}{MASK_CLOSE}" for text, trained in pieces)


def inspect(args: argparse.Namespace) -> int:
    """Run ``dataset inspect``: print format, statistics and one marked sample."""
    from senior_intern.data import dataset_stats, load_dataset, preview

    if not args.path.exists():
        raise FileNotFoundError(f"Dataset not found: {args.path}")
    if args.max_seq_length < 8:
        raise ValueError(f"--max-seq-length must be at least 8, got {args.max_seq_length}")
    cfg = DataConfig(format=DatasetFormat(args.format), code_extensions=list(args.extensions),
                     window_overlap=args.window_overlap, skip_malformed=args.skip_malformed,
                     column_map=list(args.column_map))
    tokenizer = load_tokenizer(args.model)
    loaded = load_dataset(args.path, tokenizer, cfg, args.max_seq_length)
    stats = dataset_stats(loaded, args.batch_size, args.max_seq_length, args.packing)
    template = f" ({loaded.template})" if loaded.template else ""
    print(f"Dataset: {loaded.path}")
    print(f"Format: {loaded.format.value}{template}")
    for line in loaded.summary_lines()[1:]:
        print(line)
    if loaded.ignored_files:
        print(f"{loaded.ignored_files} files ignored (.gitignore, vendored or hidden folders, language filter)")
    print(f"Records read: {loaded.records}, skipped: {loaded.skipped}, truncated: {loaded.truncated}")
    print(f"Samples: {stats.n_samples}; tokens per sample: mean {stats.mean_length:.1f}, min {stats.min_length}, max {stats.max_length}")
    print(f"Tokens: {stats.total_tokens}, trained: {stats.trained_tokens} ({stats.trained_fraction:.1%})")
    packing = f"packing on: {stats.rows} rows of {args.max_seq_length}, {stats.packed_fill:.0%} full" if stats.packing else "packing off"
    print(f"Batches per epoch: {stats.batches_per_epoch} (batch size {args.batch_size}, {packing}; an optimizer step is one batch x gradient accumulation)")
    print("Length histogram (tokens):")
    peak = max(b.count for b in stats.histogram) or 1
    for b in stats.histogram:
        bar = "#" * round(30 * b.count / peak)
        print(f"  {b.low:>6}-{b.high - 1:<6} {bar} {b.count}")
    index = min(max(args.sample, 1), len(loaded.samples)) - 1
    sample = loaded.samples[index]
    print(f"\nSample {index + 1} of {len(loaded.samples)} ({sample.source}, {len(sample)} tokens, {sample.n_trained} trained); "
          f"masked tokens {MASK_OPEN}in double brackets{MASK_CLOSE}:")
    print(marked_text(preview(sample, tokenizer)))
    return 0
