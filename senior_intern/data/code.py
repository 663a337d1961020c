"""A folder of source code as a dataset: which files to read.

``walk_code(root, ...)`` visits the folder in sorted order and keeps a file when all of these
hold:

* no ``.gitignore`` on the way excludes it (see ``gitignore.py``; nested files honoured);
* it is not in a vendored, generated or hidden folder (``VENDORED_DIRS``, any ``.name``
  folder) and is not a lock file, minified bundle or other generated file (``GENERATED_FILES``);
* its extension is in the language filter (``DataConfig.code_extensions``, or
  ``SOURCE_EXTENSIONS`` plus a few well-known names such as ``Makefile`` when that is empty);
* it is at most ``max_file_bytes`` long, has no NUL byte and decodes as UTF-8.

Files skipped for their content (binary, too large, not UTF-8) are reported with the reason;
other excluded files met on the way are only counted (folders that are not entered are not
counted). Symbolic links are never followed, and ``.gitignore`` files above ``root`` are not read.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from senior_intern.data.gitignore import GitIgnore

SOURCE_EXTENSIONS = frozenset(
    """
    .py .pyi .pyx .js .jsx .mjs .cjs .ts .tsx .vue .svelte .java .kt .kts .scala .groovy .gradle
    .go .rs .c .h .cc .cpp .cxx .hpp .hh .hxx .inl .cu .cuh .cs .fs .fsx .vb .swift .m .mm .rb .php .pl .pm
    .lua .r .jl .dart .ex .exs .erl .hrl .hs .ml .mli .clj .cljs .edn .el .lisp .scm .rkt .nim .zig .v .sv
    .vhd .vhdl .f .f90 .f95 .pas .adb .ads .asm .s .sh .bash .zsh .fish .ps1 .psm1 .bat .cmd .sql .html
    .htm .css .scss .sass .less .proto .graphql .gql .tf .hcl .cmake .mk .toml .yaml .yml .ini .cfg
    .dockerfile .nix .sol .cairo .move .wgsl .glsl .hlsl .metal
    """.split()
)
"""Extensions read from a folder of code when ``code_extensions`` is empty (lower case)."""

SOURCE_FILENAMES = frozenset({"Makefile", "GNUmakefile", "Dockerfile", "CMakeLists.txt", "Justfile", "Rakefile", "Gemfile"})
"""Extension-less (or ``.txt``) files that are source code, read when ``code_extensions`` is empty."""

VENDORED_DIRS = frozenset(
    {
        "node_modules", "vendor", "third_party", "thirdparty", "third-party", "dist", "build", "target",
        "__pycache__", "venv", "site-packages", "bower_components", "Pods", "htmlcov",
    }
)
"""Folder names never entered (dependencies and build outputs); hidden folders are skipped too."""

GENERATED_FILES = (
    "*.min.js", "*.min.css", "*.map", "*.lock", "package-lock.json", "pnpm-lock.yaml", "yarn.lock",
    "npm-shrinkwrap.json", "go.sum", "*_pb2.py", "*_pb2_grpc.py", "*.pb.go", "*.pb.h", "*.pb.cc",
    "*.generated.*", "*.g.dart", "*.designer.cs",
)
"""File-name patterns of lock files, minified bundles and generated code."""


@dataclass(frozen=True)
class CodeFile:
    """A source file accepted for training: path relative to the root ('/'-separated) and its text."""

    rel_path: str
    text: str


@dataclass
class CodeWalk:
    """What a folder walk kept and skipped."""

    files: list[CodeFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    ignored: int = 0  # excluded by .gitignore, vendored folders, generated names or the language filter


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """``["py", ".RS"]`` -> ``{".py", ".rs"}``."""
    out = set()
    for ext in extensions:
        ext = ext.strip().lower()
        if ext:
            out.add(ext if ext.startswith(".") else "." + ext)
    return frozenset(out)


def is_source_name(name: str, extensions: frozenset[str]) -> bool:
    """Whether a file name passes the language filter (``extensions`` empty: the default list)."""
    suffix = os.path.splitext(name)[1].lower()
    if extensions:
        return suffix in extensions
    return suffix in SOURCE_EXTENSIONS or name in SOURCE_FILENAMES


def is_generated_name(name: str) -> bool:
    """Lock files, minified bundles and generated sources (``GENERATED_FILES``)."""
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern) for pattern in GENERATED_FILES)


_WIDE_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32 LE"), (b"\x00\x00\xfe\xff", "UTF-32 BE"),
    (b"\xff\xfe", "UTF-16 LE"), (b"\xfe\xff", "UTF-16 BE"),
)


def wide_encoding(data: bytes) -> str | None:
    """``"UTF-16 LE"`` and the like when ``data`` is UTF-16 or UTF-32 text (by its byte-order mark,
    or, without one, by the zero bytes that ASCII characters leave at every other position)."""
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            return name
    head = data[:4096]
    if len(head) < 8:
        return None
    quarter = [head[i::4].count(0) / len(head[i::4]) for i in range(4)]
    if quarter[0] < 0.1 and min(quarter[1:]) > 0.7:
        return "UTF-32 LE"
    if quarter[3] < 0.1 and min(quarter[:3]) > 0.7:
        return "UTF-32 BE"
    even, odd = head[0::2].count(0) / len(head[0::2]), head[1::2].count(0) / len(head[1::2])
    if odd > 0.6 and even < 0.1:
        return "UTF-16 LE"
    if even > 0.6 and odd < 0.1:
        return "UTF-16 BE"
    return None


def read_source(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """The text of a source file, or (None, reason) when it is too large, binary or not UTF-8."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"larger than max_file_bytes ({size} > {max_bytes} bytes)"
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    wide = wide_encoding(data)
    if wide is not None:
        return None, f"{wide} text, not UTF-8 (save it with UTF-8 encoding)"
    if b"\x00" in data:
        return None, "binary (contains NUL bytes)"
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError:
        return None, "binary or not UTF-8"


def walk_code(root: Path, extensions: Iterable[str] = (), max_file_bytes: int = 1_000_000) -> CodeWalk:
    """Walk ``root`` and return the source files to train on, in sorted path order."""
    root = Path(root)
    exts = normalise_extensions(extensions)
    walk = CodeWalk()
    for rel_path, path in iter_files(root, walk):
        name = path.name
        if is_generated_name(name) or not is_source_name(name, exts):
            walk.ignored += 1
            continue
        text, reason = read_source(path, max_file_bytes)
        if text is None:
            walk.skipped.append((rel_path, reason))
        elif text.strip():
            walk.files.append(CodeFile(rel_path, text))
        else:
            walk.ignored += 1  # empty files teach nothing
    return walk


def iter_files(root: Path, walk: CodeWalk | None = None) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file under ``root``, in sorted order, except those in hidden or
    vendored folders, hidden files, symbolic links and what ``.gitignore`` files exclude
    (counted in ``walk.ignored`` when given)."""
    rules = GitIgnore()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if ".gitignore" in filenames:
            rules.add_file(here / ".gitignore", rel_dir)
        kept = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d.startswith(".") or d in VENDORED_DIRS or (here / d).is_symlink() or rules.ignored(rel, True):
                continue
            kept.append(d)
        dirnames[:] = kept  # os.walk descends only into these, in this order
        for f in sorted(filenames):
            rel = f"{rel_dir}/{f}" if rel_dir else f
            path = here / f
            if f.startswith(".") or path.is_symlink() or rules.ignored(rel, False):
                if walk is not None:
                    walk.ignored += 1
                continue
            yield rel, path
