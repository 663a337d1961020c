"""A folder of source code as a dataset: .gitignore rules, skipped files, the language filter, windows."""

from __future__ import annotations

import pytest

from senior_intern.config import DataConfig, DatasetFormat
from senior_intern.data import CODE_HEADER, IGNORE_INDEX, DatasetError, load_dataset
from senior_intern.data.code import walk_code
from senior_intern.data.gitignore import GitIgnore, parse_rule
from tests.data.conftest import ids


def _ignore(lines: list[str]) -> GitIgnore:
    g = GitIgnore()
    g.add_lines(lines)
    return g


@pytest.mark.parametrize(
    "pattern, path, is_dir, expected",
    [
        ("*.log", "a.log", False, True),
        ("*.log", "deep/er/a.log", False, True),
        ("*.log", "a.log.txt", False, False),
        ("/root.py", "root.py", False, True),
        ("/root.py", "sub/root.py", False, False),
        ("doc/*.txt", "doc/a.txt", False, True),
        ("doc/*.txt", "doc/sub/a.txt", False, False),
        ("doc/*.txt", "x/doc/a.txt", False, False),
        ("**/cache", "a/b/cache", True, True),
        ("**/cache", "cache", False, True),
        ("a/**/b", "a/b", False, True),
        ("a/**/b", "a/x/y/b", False, True),
        ("a/**/b", "x/a/b", False, False),
        ("out/**", "out/x/y.py", False, True),
        ("out/**", "out", True, False),
        ("build/", "build", True, True),
        ("build/", "build", False, False),
        ("build/", "src/build", True, True),
        ("?.py", "a.py", False, True),
        ("?.py", "ab.py", False, False),
        ("[ab].py", "b.py", False, True),
        ("[!ab].py", "b.py", False, False),
        ("[!ab].py", "c.py", False, True),
        ("\\#notes", "#notes", False, True),
        ("\\!bang", "!bang", False, True),
        ("trail\\ ", "trail ", False, True),
        ("a**b.py", "aXYb.py", False, True),
        ("a**b.py", "a/b.py", False, False),
    ],
)
def test_gitignore_patterns(pattern, path, is_dir, expected):
    assert _ignore([pattern]).ignored(path, is_dir) is expected


def test_gitignore_comments_blanks_negation_and_order():
    assert parse_rule("# comment") is None and parse_rule("   ") is None and parse_rule("!") is None
    g = _ignore(["*.py", "!keep.py", "", "# keep going"])
    assert g.ignored("x.py", False) and not g.ignored("keep.py", False) and not g.ignored("sub/keep.py", False)
    g = _ignore(["!keep.py", "*.py"])  # the last matching rule wins
    assert g.ignored("keep.py", False)


def test_nested_gitignore_applies_below_its_folder():
    g = GitIgnore()
    g.add_lines(["*.tmp"])
    g.add_lines(["local.py", "!x.tmp", "/top.py"], base="pkg")
    assert g.ignored("pkg/local.py", False) and g.ignored("pkg/sub/local.py", False)
    assert not g.ignored("local.py", False) and not g.ignored("other/local.py", False)
    assert not g.ignored("pkg/x.tmp", False) and g.ignored("x.tmp", False)
    assert g.ignored("pkg/top.py", False) and not g.ignored("pkg/sub/top.py", False)


@pytest.fixture
def repo(tmp_path):
    """A small project tree with everything the folder walk must skip."""
    root = tmp_path / "repo"

    def put(rel, content):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")

    put(".gitignore", "*_gen.py\n!keep_gen.py\n/secret.py\nbuild_out/\n# a comment\n")
    put("main.py", "def main():\n    return 1\n")
    put("util.py", "def helper(x):\n    return x * 2\n")
    put("a_gen.py", "GENERATED = 1\n")
    put("keep_gen.py", "KEPT = 1\n")
    put("secret.py", "TOKEN = 'x'\n")
    put("sub/secret.py", "NOT_SECRET = 1\n")
    put("build_out/x.py", "OUT = 1\n")
    put("pkg/.gitignore", "local.py\n")
    put("pkg/local.py", "LOCAL = 1\n")
    put("pkg/mod.py", "def mod():\n    pass\n")
    put("local.py", "ROOT_LOCAL = 1\n")
    put("node_modules/lib/index.js", "module.exports = 1;\n")
    put("vendor/dep.py", "DEP = 1\n")
    put(".venv/lib/site.py", "VENV = 1\n")
    put("__pycache__/main.cpython-311.py", "CACHE = 1\n")
    put("app/bundle.min.js", "var a=1;\n")
    put("app/app.js", "export const a = 1;\n")
    put("package-lock.json", "{}\n")
    put("blob.py", b"\x00\x01\x02binary")
    put("latin.py", "caf\xe9 = 1\n".encode("latin-1"))
    put("huge.py", "x = 1\n" * 400)
    put("lib.rs", "fn main() {}\n")
    put("image.png", b"\x89PNG\r\n\x1a\n")
    put("empty.py", "")
    return root


def test_code_folder_honours_gitignore_and_skips_binary_huge_vendored(repo, tiny_tokenizer):
    loaded = load_dataset(repo, tiny_tokenizer, DataConfig(max_file_bytes=1000), 128)
    assert loaded.format == DatasetFormat.CODE
    sources = sorted(s.source for s in loaded.samples)
    assert sources == sorted([
        "app/app.js", "keep_gen.py", "lib.rs", "local.py", "main.py", "pkg/mod.py", "sub/secret.py", "util.py",
    ])
    assert dict(loaded.skipped_files) == {
        "blob.py": "binary (contains NUL bytes)",
        "huge.py": "larger than max_file_bytes (2400 > 1000 bytes)",
        "latin.py": "binary or not UTF-8",
    }
    assert loaded.records == 8 and loaded.ignored_files > 0 and not loaded.problems
    assert any("3 files skipped" in line for line in loaded.summary_lines())


def test_language_filter(repo, tiny_tokenizer):
    only_py = load_dataset(repo, tiny_tokenizer, DataConfig(code_extensions=["py"], max_file_bytes=1000), 128)
    assert all(s.source.endswith(".py") for s in only_py.samples) and "lib.rs" not in {s.source for s in only_py.samples}
    rust = walk_code(repo, [".RS"], 1000)
    assert [f.rel_path for f in rust.files] == ["lib.rs"]


def test_each_window_starts_with_the_masked_file_header(repo, tiny_tokenizer):
    loaded = load_dataset(repo, tiny_tokenizer, DataConfig(code_extensions=[".py"], max_file_bytes=1000), 128)
    s = next(s for s in loaded.samples if s.source == "main.py")
    header = ids(tiny_tokenizer, CODE_HEADER.format(path="main.py"))
    body = ids(tiny_tokenizer, "def main():\n    return 1\n")
    assert s.input_ids == header + body + [tiny_tokenizer.eos_token_id]
    assert s.labels == [IGNORE_INDEX] * len(header) + body + [tiny_tokenizer.eos_token_id]


def test_long_files_split_into_overlapping_windows(tmp_path, tiny_tokenizer):
    root = tmp_path / "proj"
    root.mkdir()
    text = "".join(f"def f{i}(a, b):\n    return a + b + {i}\n" for i in range(12))
    (root / "big.py").write_text(text, encoding="utf-8")
    max_len, overlap = 48, 8
    loaded = load_dataset(root, tiny_tokenizer, DataConfig(window_overlap=overlap), max_len)
    windows = loaded.samples
    assert len(windows) > 2
    assert [w.source for w in windows] == [f"big.py#window{k + 1}" for k in range(len(windows))]
    assert {w.split_group for w in windows} == {"big.py"}  # the validation split keeps them together
    header = ids(tiny_tokenizer, CODE_HEADER.format(path="big.py"))
    content = ids(tiny_tokenizer, text)
    eos = tiny_tokenizer.eos_token_id
    bodies = []
    for k, w in enumerate(windows):
        assert len(w) <= max_len
        assert w.input_ids[: len(header)] == header and set(w.labels[: len(header)]) == {IGNORE_INDEX}
        body = w.input_ids[len(header):]
        last = k == len(windows) - 1
        if last:
            assert body[-1] == eos and w.labels[-1] == eos
            body = body[:-1]
        bodies.append(body)
        if k:  # the first `overlap` tokens repeat the end of the previous window and are masked context
            assert body[:overlap] == bodies[k - 1][-overlap:]
            assert set(w.labels[len(header):len(header) + overlap]) == {IGNORE_INDEX}
    # Every content token is trained exactly once, in order.
    trained = [t for w in windows for t, label in zip(w.input_ids[len(header):], w.labels[len(header):]) if label != IGNORE_INDEX]
    assert trained == content + [eos]


def test_a_single_source_file_is_code(tmp_path, tiny_tokenizer):
    path = tmp_path / "tool.py"
    path.write_text("print('hi')\n", encoding="utf-8")
    loaded = load_dataset(path, tiny_tokenizer, None, 64)
    assert loaded.format == DatasetFormat.CODE and loaded.samples[0].source == "tool.py"
    assert loaded.samples[0].input_ids[: len(ids(tiny_tokenizer, "File: tool.py\n"))] == ids(tiny_tokenizer, "File: tool.py\n")


def test_folder_without_source_files_is_an_empty_dataset(tmp_path, tiny_tokenizer):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "only" / "data.py").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match=r"empty: no source files to train on \(1 files excluded .*1 skipped"):
        load_dataset(tmp_path / "only", tiny_tokenizer)


def test_windows_that_cannot_fit_the_overlap_are_a_clear_error(tmp_path, tiny_tokenizer):
    (tmp_path / "big.py").write_text("x = 1\n" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="window_overlap 30"):
        load_dataset(tmp_path / "big.py", tiny_tokenizer, DataConfig(window_overlap=30), 32)
