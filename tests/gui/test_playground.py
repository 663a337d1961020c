"""The Playground: base and adapter answers streamed side by side, stoppable, with readable errors."""

from __future__ import annotations

import pytest

from senior_intern.gui.playground_page import NO_ADAPTER
from tests.gui.test_adapters_page import save_peft_adapter


@pytest.fixture
def adapter(window, qtbot, tmp_path, tiny_model_dir):
    """A PEFT adapter for the tiny model, imported into a temp library shown by the window."""
    from senior_intern.adapters.library import AdapterLibrary

    library = AdapterLibrary(tmp_path / "library")
    info = library.import_(save_peft_adapter(tmp_path / "peft"), name="tiny-adapter")
    with qtbot.waitSignal(window.adapters_page.changed, timeout=30000):
        window.adapters_page.set_root(library.root)
    return info


def test_generates_with_base_and_adapter_side_by_side(window, qtbot, adapter, tiny_model_dir):
    page = window.playground_page
    window._try_adapter(adapter.id)
    assert window.stack.currentIndex() == 3
    assert page.adapter.currentData() == adapter.id
    page.base.setText(str(tiny_model_dir))
    page.max_tokens.setValue(6)
    page.prompt.setPlainText("def add")
    page.generate_button.click()
    assert page.running and not page.generate_button.isEnabled() and page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not page.running, timeout=60000)
    assert page.error.isHidden(), page.error.text()
    base, tuned = page.outputs["base"].toPlainText(), page.outputs["adapter"].toPlainText()
    assert base and tuned
    assert base != tuned  # the adapter changes the answer
    assert page.generate_button.isEnabled() and not page.stop_button.isEnabled()


def test_stop_ends_the_generation_early(window, qtbot, adapter, tiny_model_dir):
    page = window.playground_page
    assert page.open_adapter(adapter.id)
    page.base.setText(str(tiny_model_dir))
    page.max_tokens.setValue(4000)
    page.prompt.setPlainText("hello")
    page.generate_button.click()
    qtbot.waitUntil(lambda: len(page.outputs["base"].toPlainText()) > 0, timeout=60000)
    page.stop_button.click()
    qtbot.waitUntil(lambda: not page.running, timeout=30000)
    assert page.outputs["adapter"].toPlainText() == ""  # stopped before the adapter's turn
    assert page.error.isHidden()
    page.adapter.setCurrentIndex(page.adapter.findText(NO_ADAPTER))
    assert page.adapter.currentData() is None


def test_errors_are_shown_in_the_page(window, qtbot, tmp_path):
    page = window.playground_page
    page.prompt.setPlainText("")
    page.generate()
    assert page.error.text() == "Write a prompt first." and not page.running
    page.prompt.setPlainText("hi")
    page.base.setText(str(tmp_path / "missing.gguf"))
    page.generate()
    assert "Base model not found" in page.error.text() and not page.running
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    page.base.setText(str(broken))
    page.generate()
    qtbot.waitUntil(lambda: not page.running, timeout=30000)
    assert not page.error.isHidden() and "Traceback" not in page.error.text()
