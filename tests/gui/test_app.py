"""Start-up, settings, menus and the small helpers of the app shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Signal

from senior_intern.config import TrainingJob
from senior_intern.gui import qt_fixes
from senior_intern.gui.errors import describe_error
from senior_intern.gui.main_window import PAGES, MainWindow, initial_job
from senior_intern.gui.run_page import format_duration
from senior_intern.gui.runs import find_interrupted_runs
from senior_intern.gui.settings import AppSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_gui_modules_do_not_import_torch():
    code = (
        "import sys, importlib\n"
        "for name in ('app', 'main_window', 'train_page', 'run_page', 'adapters_page', 'playground_page', 'worker', 'charts'):\n"
        "    importlib.import_module('senior_intern.gui.' + name)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'safetensors', 'peft')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_qt_calls_cannot_exhaust_the_reference_counts_of_singletons(qtbot):
    from PySide6.QtWidgets import QLabel

    class Emitter(QObject):
        ping = Signal(object)

    emitter, label = Emitter(), QLabel()
    qtbot.addWidget(label)
    for _ in range(20_000):  # without the work-around the interpreter aborts long before this
        emitter.ping.emit(1)
        label.setText("x")
    assert sys.getrefcount(None) > 1_000 and sys.getrefcount(True) > 1_000
    assert qt_fixes.install() == qt_fixes._installed


def test_window_has_pages_menus_and_status(window):
    assert [window.sidebar.item(i).text() for i in range(window.sidebar.count())] == list(PAGES)
    shortcuts = {key: action.shortcut().toString() for key, action in window.actions_.items()}
    for key in ("open_model", "open_dataset", "start", "pause", "cancel", "quit"):
        assert shortcuts[key], key
    assert shortcuts["start"] == "Ctrl+R" and shortcuts["pause"] == "Ctrl+P"
    assert not window.actions_["pause"].isEnabled() and not window.actions_["cancel"].isEnabled()
    for index in range(len(PAGES)):
        window.actions_[f"page_{PAGES[index].lower()}"].trigger()
        assert window.stack.currentIndex() == index
    assert window.state_label.text() == "Idle"


def test_the_app_icon_loads():
    from senior_intern.gui.app import app_icon, create_application

    app = create_application([])
    icon = app_icon()
    assert not icon.isNull()
    assert icon.pixmap(256, 256).width() == 256
    assert not app.windowIcon().isNull()


def test_device_shows_in_the_status_bar(window, qtbot):
    qtbot.waitUntil(lambda: window.device_label.text() != "Device: …", timeout=10000)
    assert window.device_label.text().startswith(("CPU", "GPU"))


def test_geometry_page_and_job_are_remembered(qtbot, settings, tiny_job, messages):
    settings.set_last_job(tiny_job)
    first = MainWindow(settings)
    qtbot.addWidget(first)
    first.resize(780, 590)  # within the offscreen screen (800 x 600), so restoring does not clamp it
    first.show()
    size = first.size()
    first.show_page(2)
    first.train_page.form.editors["training.epochs"].set(9)
    first.close()
    first.tasks.wait()
    again = AppSettings(settings.file_name)
    assert again.current_page() == 2
    assert again.last_job().training.epochs == 9
    second = MainWindow(again)
    qtbot.addWidget(second)
    assert again.geometry() is not None and second.size() == size
    assert second.stack.currentIndex() == 2
    assert second.train_page.current_job()[0].training.epochs == 9
    second.tasks.wait()


def test_initial_job_falls_back_to_the_demo_when_the_last_model_is_gone(settings, tiny_job):
    tiny_job.base_model_path = "/nowhere/model.gguf"
    settings.set_last_job(tiny_job)
    job = initial_job(settings)
    assert job.name == "demo" and job.base_model_path != "/nowhere/model.gguf"


def test_settings_survive_garbage(tmp_path):
    s = AppSettings(tmp_path / "s.ini")
    s.set_value("job/last", "{not json")
    assert s.last_job() is None
    s.set_value("window/page", "x")
    assert s.current_page() == 0
    s.set_last_path("model", tmp_path / "m.gguf")
    assert s.start_folder("model") == str(tmp_path)
    assert s.start_folder("dataset") == str(Path.home())


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError("Dataset not found: /x"), "Check the path"),
        (MemoryError(), "Lower the batch size"),
        (RuntimeError("CUDA out of memory"), "Lower the batch size"),
        (PermissionError("denied"), "permissions"),
        (FileExistsError("exists"), "another name"),
        (ImportError("no module x"), "Reinstall"),
        (ValueError("Rank must be 1..256"), "Rank must be 1..256"),
        (OSError("disk"), "Check the disk"),
        (KeyError("boom"), "Unexpected error (KeyError)"),
    ],
)
def test_errors_are_described_for_people(exc, expected):
    text = describe_error(exc)
    assert expected in text and "Traceback" not in text


def test_format_duration():
    assert format_duration(None) == "–" and format_duration(float("nan")) == "–"
    assert format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"


def _fake_run(root: Path, name: str, steps: list[int], adapters: Path, finished: bool) -> Path:
    run = root / name
    for step in steps:
        ck = run / "checkpoints" / f"step-{step:07d}"
        ck.mkdir(parents=True)
        (ck / "state.json").write_text("{}")
    job = TrainingJob(name=name, base_model_path="m", dataset_path="d", output_dir=str(root), adapters_dir=str(adapters))
    job.save(run / "job.toml")
    if finished:
        folder = adapters / f"{name}-1234"
        folder.mkdir(parents=True)
        (folder / "senior_intern.json").write_text(json.dumps({"run_dir": str(run)}))
    return run


def test_interrupted_runs_are_those_with_checkpoints_and_no_adapter(tmp_path):
    runs, adapters = tmp_path / "runs", tmp_path / "adapters"
    _fake_run(runs, "done", [2, 4], adapters, finished=True)
    stopped = _fake_run(runs, "stopped", [2, 4, 6], adapters, finished=False)
    (runs / "empty").mkdir()
    (adapters / "broken").mkdir()
    (adapters / "broken" / "senior_intern.json").write_text("{nope")
    found = find_interrupted_runs(runs)
    assert [(r.name, r.step) for r in found] == [("stopped", 6)]
    assert found[0].run_dir == stopped
    assert find_interrupted_runs(tmp_path / "missing") == []


def test_the_window_offers_to_resume_an_interrupted_run(qtbot, settings, tiny_job, messages, monkeypatch, tmp_path):
    from senior_intern import paths

    runs = paths.runs_dir()
    stopped = _fake_run(runs, f"offered-{tmp_path.name}", [3], tmp_path / "lib", finished=False)
    settings.set_last_job(tiny_job)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: not win.banner.isHidden(), timeout=10000)
    assert stopped.name in win.banner.label.text() and "step 3" in win.banner.label.text()
    resumed = []
    monkeypatch.setattr(win.run_page, "resume_from", resumed.append)
    win.banner.button("Resume").click()
    assert resumed == [stopped] and win.stack.currentIndex() == 1 and win.banner.isHidden()
    win._offer_resume(find_interrupted_runs(runs))
    win.banner.button("Don't offer again").click()
    win._offer_resume([r for r in find_interrupted_runs(runs) if r.run_dir == stopped])
    assert win.banner.isHidden()
    win.tasks.wait()


def test_background_threads_get_a_lower_priority():
    import os
    import threading

    from senior_intern.gui.threads import lower_thread_priority

    seen = []

    def work():
        lower_thread_priority(3)
        lower_thread_priority(3)  # idempotent
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if sys.platform.startswith("linux"):
        assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + 3)]


def test_only_the_latest_task_of_a_name_reports(qtbot):
    import threading

    from senior_intern.gui.tasks import TaskRunner

    runner = TaskRunner()
    gate = threading.Event()
    got = []
    runner.submit(lambda: gate.wait(5) and "old", on_done=got.append, latest="analysis")
    runner.submit(lambda: "new", on_done=got.append, latest="analysis")
    runner.submit(lambda: "other", on_done=got.append, latest="x")
    runner.forget("x")
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert got == ["new"]
