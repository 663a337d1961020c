"""``layout``: the on-disk names in one place, one atomic write, one folder size."""

from __future__ import annotations

import os

import pytest

from senior_intern import layout


def test_checkpoint_names_round_trip():
    assert layout.checkpoint_name(120) == "step-0000120"
    assert layout.checkpoint_step("step-0000120") == 120
    assert layout.checkpoint_step(layout.BEST) is None
    assert layout.checkpoint_step("step-abc") is None


def test_write_text_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "state.json"
    layout.write_text_atomic(target, "one")
    layout.write_text_atomic(target, "two ✓")
    assert target.read_text(encoding="utf-8") == "two ✓"
    assert os.listdir(target.parent) == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "job.toml"
    layout.write_text_atomic(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(layout.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        layout.write_text_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["job.toml"]


def test_folder_size_counts_every_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"123")
    assert layout.folder_size(tmp_path) == 8
    assert layout.folder_size(tmp_path / "missing") == 0
