"""The small parts of GGUF files, read once and kept in the model cache.

Reading a GGUF's config and tokenizer through transformers parses the whole vocabulary (with
``gguf_fields.fast_gguf_metadata`` once, about 0.5 s for the 135M demo model on two cores; 10 s
through ``gguf.GGUFReader``). The first load of a GGUF file writes
``paths.model_cache_dir() / <content hash>/`` with ``config.json``, the tokenizer files and
``source.json`` (the source path, size, mtime, hash and format version). The weights are not
cached: they are read from the GGUF file itself, kept compact (``gguf_model.py``). Entries of
format version 1 (which held a float32 copy of the weights) are rebuilt, dropping that copy.
It is built in a temporary folder and renamed into place, so a crash never leaves half an entry.
Converting a new version of a file removes the entries left from its older versions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from senior_intern import paths
from senior_intern.models.info import ModelLoadError, one_line

SOURCE_FILE = "source.json"
FORMAT_VERSION = 2
TMP_PREFIX = ".tmp-"
ABANDONED_TMP_SECONDS = 24 * 3600
"""Temporary folders older than this are leftovers of a crashed conversion and are removed."""


def cache_entry(content_hash: str) -> Path:
    """Folder a GGUF file with this content hash converts into (it may not exist yet)."""
    return paths.model_cache_dir() / content_hash


def cached_conversion(content_hash: str) -> Path | None:
    """The finished conversion of a GGUF file with this content hash, or None."""
    folder = cache_entry(content_hash)
    try:
        record = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        return None
    return folder if (folder / "config.json").is_file() else None


def convert_gguf(source: Path, content_hash: str) -> Path:
    """Write the config and tokenizer of the GGUF file ``source`` into the cache and return the
    folder (an older entry of the same hash is replaced). Raises ``ModelLoadError`` when
    transformers cannot read the file.
    """
    remove_entry(content_hash)
    root = paths.model_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}{content_hash[:12]}-"))
    try:
        _write_conversion(source, tmp)
        stat = source.stat()
        record = {
            "format_version": FORMAT_VERSION,
            "source": str(source),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "hash": content_hash,
            "converted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        final = cache_entry(content_hash)
        try:
            tmp.rename(final)
        except OSError:
            if cached_conversion(content_hash) is None:  # not another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune_stale(source, keep=content_hash)
    return final


def _write_conversion(source: Path, out: Path) -> None:
    """Read ``source``'s config and tokenizer with transformers' GGUF support and save them."""
    from transformers import AutoConfig, AutoTokenizer

    from senior_intern.models.gguf_fields import fast_gguf_metadata

    try:
        with fast_gguf_metadata(source):
            config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        config.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except MemoryError:
        raise
    except Exception as exc:  # transformers and gguf raise many types; the user needs one line
        raise ModelLoadError(f"{source}: could not read the GGUF file's config and tokenizer ({one_line(exc)})") from exc


def prune_stale(source: Path, keep: str) -> list[Path]:
    """Remove cache entries converted from ``source`` other than ``keep``, and abandoned
    temporary folders; returns the folders removed."""
    root = paths.model_cache_dir()
    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name == keep:
            continue
        if folder.name.startswith(TMP_PREFIX):
            stale = now - folder.stat().st_mtime > ABANDONED_TMP_SECONDS
        else:
            stale = _source_of(folder) == str(source)
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def remove_entry(content_hash: str) -> None:
    """Delete the conversion of this content hash (used when a cached folder turns out damaged)."""
    shutil.rmtree(cache_entry(content_hash), ignore_errors=True)


def _source_of(folder: Path) -> str | None:
    try:
        record = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record.get("source") if isinstance(record, dict) else None

