"""The Playground: base and adapter answers streamed side by side, stoppable, with readable errors."""

from __future__ import annotations

import pytest

from PySide6.QtGui import QFontInfo

from senior_intern.gui.playground_page import NO_ADAPTER, PlaygroundPage
from senior_intern.gui.settings import AppSettings
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
    page.temperature.setValue(0.0)  # greedy: the adapter is the only difference
    page.prompt.setPlainText("def add")
    page.generate_button.click()
    assert page.running and not page.generate_button.isEnabled() and page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not page.running, timeout=60000)
    assert page.error.isHidden(), page.error.text()
    base, tuned = page.outputs["base"].toPlainText(), page.outputs["adapter"].toPlainText()
    assert base and tuned
    assert base != tuned  # the adapter changes the answer
    assert page.generate_button.isEnabled() and not page.stop_button.isEnabled()
    for side in ("base", "adapter"):  # each side says how fast and why it stopped
        status = page.side_status[side].text()
        assert "tokens/s" in status and ("reached the max new tokens" in status or "ended its answer" in status), status


def test_stop_ends_the_generation_early(window, qtbot, adapter, tiny_model_dir):
    page = window.playground_page
    assert page.open_adapter(adapter.id)
    page.base.setText(str(tiny_model_dir))
    page.max_tokens.setValue(4000)
    page.prompt.setPlainText("hello")
    page.generate_button.click()
    # both answers grow at once: the adapter does not wait for the base model to finish
    qtbot.waitUntil(lambda: bool(page.outputs["base"].toPlainText() and page.outputs["adapter"].toPlainText()), timeout=60000)
    assert page.running
    page.stop_button.click()
    qtbot.waitUntil(lambda: not page.running, timeout=30000)
    assert page.error.isHidden()
    for side in ("base", "adapter"):
        assert "stopped by you" in page.side_status[side].text()
    page.adapter.setCurrentIndex(page.adapter.findText(NO_ADAPTER))
    assert page.adapter.currentData() is None


def test_buttons_stay_still_and_code_is_monospace(window, qtbot, tiny_model_dir):
    page = window.playground_page
    window.stack.setCurrentIndex(3)
    page.base.setText(str(tiny_model_dir))
    page.max_tokens.setValue(4000)
    page.prompt.setPlainText("def add")
    qtbot.wait(50)
    before = (page.generate_button.geometry(), page.stop_button.geometry())
    page.generate_button.click()
    qtbot.waitUntil(lambda: page.outputs["base"].toPlainText() != "", timeout=60000)
    qtbot.wait(50)
    assert (page.generate_button.geometry(), page.stop_button.geometry()) == before
    assert page.side_status["adapter"].text() == "Choose an adapter to compare."
    page.stop_button.click()
    qtbot.waitUntil(lambda: not page.running, timeout=30000)
    qtbot.wait(50)
    assert (page.generate_button.geometry(), page.stop_button.geometry()) == before
    for widget in (page.outputs["base"], page.outputs["adapter"], page.prompt):
        assert QFontInfo(widget.font()).fixedPitch()


def test_settings_and_recent_prompts_survive_a_restart(window, qtbot, settings, tiny_model_dir):
    page = window.playground_page
    page.base.setText(str(tiny_model_dir))
    page.max_tokens.setValue(3)
    page.temperature.setValue(0.3)
    page.top_p.setValue(0.5)
    page.system_prompt.setPlainText("Answer in one word.")
    for prompt in ("first prompt", "second prompt"):
        page.prompt.setPlainText(prompt)
        page.generate_button.click()
        qtbot.waitUntil(lambda: not page.running, timeout=60000)
        assert page.error.isHidden(), page.error.text()
    assert "reached the max new tokens" in page.side_status["base"].text() or "ended" in page.side_status["base"].text()

    again = PlaygroundPage(AppSettings(settings.file_name))  # a new session reading the same file
    qtbot.addWidget(again)
    assert again.history.prompts() == ["second prompt", "first prompt"]
    assert again.options() == {"max_new_tokens": 3, "temperature": 0.3, "top_p": 0.5, "system_prompt": "Answer in one word."}
    assert again.recent.count() == 3 and again.recent.isEnabled()
    again.recent.activated.emit(2)
    assert again.prompt.toPlainText() == "first prompt"


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
