"""Content hashes of model files, remembered so that hashing a multi-gigabyte file happens once.

A file's hash is blake2b over its full content (read in 8 MiB blocks). The result is kept in
``<model cache>/hashes.json`` keyed by the file's absolute path together with its size and
modification time (ns); a file that changes in either gets hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from senior_intern import paths
from senior_intern.layout import write_text_atomic

BLOCK_SIZE = 8 * 1024 * 1024
DIGEST_SIZE = 20
"""Bytes of the blake2b digest (40 hex characters)."""
INDEX_NAME = "hashes.json"


def _index_path() -> Path:
    return paths.model_cache_dir() / INDEX_NAME


def _read_index() -> dict[str, dict]:
    try:
        data = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: the hashes are recomputed
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(index: dict[str, dict]) -> None:
    """Write the index atomically, dropping entries of files that no longer exist."""
    kept = {key: entry for key, entry in index.items() if os.path.exists(key)}
    write_text_atomic(_index_path(), json.dumps(kept, indent=1, sort_keys=True))


def hash_file_content(path: Path) -> str:
    """blake2b hex digest of the whole file, read in ``BLOCK_SIZE`` blocks (no caching)."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    with open(path, "rb") as f:
        while block := f.read(BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike[str]) -> str:
    """Content hash of one file; instant when the file is unchanged since it was last hashed."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    index = _read_index()
    entry = index.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["hash"])
    value = hash_file_content(path)
    index[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": value}
    with contextlib.suppress(OSError):  # a read-only cache only costs a rehash next time
        _write_index(index)
    return value


def combined_hash(folder: Path, files: Iterable[Path]) -> str:
    """One hash over several files of a folder: each file's relative name and content hash."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for file in sorted(files):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file_hash(file)}\n".encode())
    return digest.hexdigest()
