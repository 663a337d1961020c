"""The status-bar activity indicator names the background tasks while they run."""

from __future__ import annotations

import threading

from PySide6.QtWidgets import QWidget


def test_the_indicator_names_running_tasks_and_goes_idle(window, qtbot):
    indicator = window.findChild(QWidget, "activityIndicator")
    assert indicator is not None and indicator is window.activity
    window.tasks.wait()
    qtbot.waitUntil(lambda: indicator.label.text() == "Idle", timeout=30000)
    gate = threading.Event()
    done = []
    window.tasks.submit(gate.wait, 20, on_done=done.append, name="GGUF export")
    window.tasks.submit(gate.wait, 20, name="GGUF export")
    assert indicator.label.text() == "Working: GGUF export ×2" and not indicator.bar.isHidden()
    gate.set()
    qtbot.waitUntil(lambda: indicator.label.text() == "Idle", timeout=10000)
    assert done == [True] and indicator.bar.isHidden()
