"""load_dataset reports how far it is: records of a file, files of a code folder."""

from __future__ import annotations

import json

from senior_intern.config import DataConfig
from senior_intern.data import load_dataset


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_loading_reports_its_progress_in_records_and_in_files(tmp_path, tiny_tokenizer):
    data = _write(tmp_path / "d.jsonl", [{"prompt": f"def add {i} ->", "completion": " add def"} for i in range(70)])
    seen = []
    load_dataset(data, tiny_tokenizer, DataConfig(), 64, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 70) and seen[-1] == (70, 70)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) <= 70 // 32 + 2  # a report every 32
    code = tmp_path / "repo"
    code.mkdir()
    for i in range(5):
        (code / f"m{i}.py").write_text(f"def f{i}(a, b):\n    return a + b\n")
    seen.clear()
    load_dataset(code, tiny_tokenizer, DataConfig(), 64, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
