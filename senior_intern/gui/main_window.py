"""``MainWindow``: the four pages (Train, Run, Adapters, Playground), menus, status bar, drops.

The window is built without torch; everything slow (model details, dataset analysis, the adapter
library, device detection) starts after it is shown, on background threads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QMainWindow, QMessageBox, QStackedWidget, QVBoxLayout, QWidget

from senior_intern import __version__
from senior_intern.config import TrainingJob
from senior_intern.defaults import default_job
from senior_intern.gui import appearance, drops, screen_fit
from senior_intern.gui.activity import ActivityIndicator, ActivityNotice
from senior_intern.gui.adapters_page import AdaptersPage
from senior_intern.gui.playground_page import PlaygroundPage
from senior_intern.gui.run_page import RunPage
from senior_intern.gui.runs import InterruptedRun, find_interrupted_runs
from senior_intern.gui.settings import AppSettings
from senior_intern.gui.tasks import TaskRunner
from senior_intern.gui.train_page import TrainPage
from senior_intern.gui.widgets import Banner, local_paths
from senior_intern.gui.worker import TrainingRunner

PAGES = ("Train", "Run", "Adapters", "Playground")
# Painting a chart calls into Python once per scene item, and each call waits for the GIL; with
# a training thread busy in Python, the default 5 ms hand-over turns one repaint into a stall.
GIL_SWITCH_INTERVAL = 0.001
TRAIN, RUN, ADAPTERS, PLAYGROUND = range(4)


def device_summary() -> str:
    """'GPU: <name>' when NVML sees an NVIDIA GPU, else 'CPU (<n> cores)' (no torch needed)."""
    import os

    from senior_intern.hardware.monitor import HardwareMonitor

    with HardwareMonitor() as monitor:
        gpus = monitor.sample().gpus
    if gpus:
        return "GPU: " + (gpus[0].name or f"#{gpus[0].index}") + (f" (+{len(gpus) - 1})" if len(gpus) > 1 else "")
    return f"CPU ({os.cpu_count() or 1} cores)"


def initial_job(settings: AppSettings) -> TrainingJob:
    """The last job when its model still exists, else the demo job (demo model, sample dataset)."""
    job = settings.last_job()
    if job is not None and job.base_model_path and Path(job.base_model_path).exists():
        return job
    return default_job("quick")


class MainWindow(QMainWindow):
    """The application window."""

    def __init__(self, settings: AppSettings | None = None) -> None:
        super().__init__()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.settings = settings or AppSettings()
        self.setWindowTitle("Senior Intern")
        self.setAcceptDrops(True)
        self.tasks = TaskRunner(self)
        self.runner = TrainingRunner(self)
        self.train_page = TrainPage(self.settings, self.tasks)
        self.run_page = RunPage(self.runner)
        self.adapters_page = AdaptersPage(self.tasks)
        self.playground_page = PlaygroundPage(self.settings, self.tasks)
        self._pending_try: str | None = None

        self.sidebar = QListWidget()
        self.sidebar.addItems(list(PAGES))
        self.sidebar.setFixedWidth(120)
        self.sidebar.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        for page in (self.train_page, self.run_page, self.adapters_page, self.playground_page):
            self.stack.addWidget(page)
        self.banner = Banner()
        self.activity_notice = ActivityNotice(self.tasks)
        self._opening_task: int | None = None
        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(0, 0, 0, 0)
        content_layout.addWidget(self.banner)
        content_layout.addWidget(self.activity_notice)
        content_layout.addWidget(self.stack, 1)
        central = QWidget()
        central_layout = QHBoxLayout(central)
        central_layout.setContentsMargins(4, 4, 4, 0)
        central_layout.addWidget(self.sidebar)
        central_layout.addWidget(content, 1)
        self.setCentralWidget(central)
        self.sidebar.currentRowChanged.connect(self.show_page)

        self.state_label = QLabel("Idle")
        self.device_label = QLabel("Device: …")
        self.activity = ActivityIndicator(self.tasks)
        self.statusBar().addPermanentWidget(self.activity)
        self.statusBar().addPermanentWidget(self.state_label)
        self.statusBar().addPermanentWidget(self.device_label)
        self._build_menus()
        appearance.apply(self.appearance_mode())
        appearance.focus_ring(self.train_page.start_button)
        self._connect()

        screen_fit.place_window(self, self.settings.geometry())
        self._placed = False
        self.train_page.set_job(initial_job(self.settings))
        self.sidebar.setCurrentRow(min(max(self.settings.current_page(), 0), len(PAGES) - 1))
        QTimer.singleShot(0, self._after_show)

    # --- wiring -----------------------------------------------------------------------------------
    def _action(self, menu, text: str, slot, shortcuts: tuple = ()) -> QAction:
        action = QAction(text, self)
        if shortcuts:
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        tp = self.train_page
        self.actions_ = {
            "open_model": self._action(file, "Open &model file…", self._open_model_file, ("Ctrl+M",)),
            "open_model_folder": self._action(file, "Open model &folder…", self._open_model_folder, ("Ctrl+Shift+M",)),
            "open_dataset": self._action(file, "Open &dataset file…", self._open_dataset_file, ("Ctrl+O",)),
            "open_dataset_folder": self._action(file, "Open dataset f&older…", self._open_dataset_folder, ("Ctrl+Shift+O",)),
        }
        file.addSeparator()
        self.actions_["load_job"] = self._action(file, "&Load job…", tp.load_job_dialog, ("Ctrl+L",))
        self.actions_["save_job"] = self._action(file, "&Save job…", tp.save_job_dialog, ("Ctrl+S",))
        file.addSeparator()
        self.actions_["quit"] = self._action(file, "&Quit", self.close, ("Ctrl+Q",))
        run = bar.addMenu("&Run")
        self.actions_["start"] = self._action(run, "&Start training", tp.start, ("Ctrl+R", "F5"))
        self.actions_["pause"] = self._action(run, "&Pause / resume", self.run_page.toggle_pause, ("Ctrl+P", "F6"))
        self.actions_["cancel"] = self._action(run, "&Cancel", self.run_page.cancel, ("Ctrl+.", "Shift+F5"))
        run.addSeparator()
        self.actions_["resume_checkpoint"] = self._action(run, "&Resume from checkpoint…", self._resume_dialog, ("Ctrl+Shift+R",))
        view = bar.addMenu("&View")
        for index, name in enumerate(PAGES):
            self.actions_[f"page_{name.lower()}"] = self._action(view, name, lambda _=False, i=index: self.show_page(i), (f"Ctrl+{index + 1}",))
        view.addSeparator()
        looks = view.addMenu("&Appearance")
        group = QActionGroup(self)
        current = self.appearance_mode()
        for mode in appearance.MODES:
            action = self._action(looks, mode, lambda _=False, m=mode: self.set_appearance(m))
            action.setCheckable(True)
            action.setChecked(mode == current)
            group.addAction(action)
            self.actions_[f"appearance_{mode.lower()}"] = action
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About Senior Intern", self._about)
        self.actions_["pause"].setEnabled(False)
        self.actions_["cancel"].setEnabled(False)

    def _connect(self) -> None:
        self.train_page.start_requested.connect(self._start)
        self.train_page.validity_changed.connect(lambda _: self._update_actions())
        self.runner.running_changed.connect(self._running_changed)
        self.runner.finished.connect(self._run_finished)
        self.runner.opening.connect(self._model_opening)
        self.runner.running_changed.connect(lambda running: running or self._model_opening(None))
        self.run_page.status_changed.connect(self.state_label.setText)
        self.run_page.open_adapter.connect(self._show_adapter)
        self.run_page.try_adapter.connect(self._try_adapter)
        self.adapters_page.try_adapter.connect(self._try_adapter)
        self.adapters_page.changed.connect(self._library_changed)

    def _model_opening(self, event) -> None:
        """Show the base model's opening (tensors read) as a task in the activity centre; None: it ended."""
        if event is not None and self._opening_task is None:
            self._opening_task = self.tasks.track("Opening the base model")
        if self._opening_task is None:
            return
        if event is not None:
            self.tasks.update(self._opening_task, event.done, event.total)
        if event is None or (event.total and event.done >= event.total):
            self.tasks.end(self._opening_task)
            self._opening_task = None

    def _after_show(self) -> None:
        self.tasks.submit(device_summary, on_done=lambda text: self.device_label.setText(text),
                          on_error=lambda exc: self.device_label.setText("Device: unknown"))
        self.tasks.submit(find_interrupted_runs, on_done=self._offer_resume, on_error=lambda exc: None)

    # --- pages ------------------------------------------------------------------------------------
    def show_page(self, index: int) -> None:
        """Show page ``index`` (0 Train, 1 Run, 2 Adapters, 3 Playground)."""
        if self.sidebar.currentRow() != index:
            self.sidebar.setCurrentRow(index)
            return
        self.stack.setCurrentIndex(index)
        if index in (ADAPTERS, PLAYGROUND):
            self.adapters_page.ensure_loaded()

    def _library_changed(self) -> None:
        self.playground_page.set_adapters(self.adapters_page.adapters)
        if self._pending_try and self.playground_page.open_adapter(self._pending_try):
            self._pending_try = None

    def _show_adapter(self, adapter_id: str) -> None:
        result = self.run_page.result
        root = Path(result.adapter_path).parent if result is not None and result.adapter_path else None
        self.adapters_page.show_adapter(adapter_id, root)
        self.show_page(ADAPTERS)

    def _try_adapter(self, adapter_id: str) -> None:
        self.show_page(PLAYGROUND)
        if not self.playground_page.open_adapter(adapter_id):
            self._pending_try = adapter_id
            self.adapters_page.refresh(select=adapter_id)

    # --- runs -------------------------------------------------------------------------------------
    def _start(self, job: TrainingJob) -> None:
        self.run_page.start_job(job)
        self.show_page(RUN)

    def resume_run(self, path: str | Path) -> None:
        """Resume the run of a run folder or checkpoint and show the Run page."""
        self.banner.hide()
        self.run_page.resume_from(path)
        self.show_page(RUN)

    def _resume_dialog(self) -> None:
        self.show_page(RUN)
        self.run_page.resume_dialog()

    def _running_changed(self, running: bool) -> None:
        self.train_page.set_running(running)
        self._update_actions()

    def _update_actions(self) -> None:
        running = self.runner.running
        self.actions_["start"].setEnabled(self.train_page.is_valid and not running)
        self.actions_["pause"].setEnabled(running)
        self.actions_["cancel"].setEnabled(running)
        self.actions_["resume_checkpoint"].setEnabled(not running)

    def _run_finished(self, result) -> None:
        if result.adapter_id:
            root = Path(result.adapter_path).parent if result.adapter_path else None
            self.adapters_page.show_adapter(result.adapter_id, root)

    def _offer_resume(self, runs: list[InterruptedRun]) -> None:
        dismissed = set(self.settings.value("runs/dismissed", []) or [])
        runs = [r for r in runs if str(r.run_dir) not in dismissed]
        if not runs or self.runner.running:
            return
        run = runs[0]
        more = f" ({len(runs) - 1} more interrupted run(s) can be resumed from the Run menu.)" if len(runs) > 1 else ""
        self.banner.show_message(
            f"The run “{run.name}” stopped at step {run.step} before it finished. Resume it?{more}",
            [("Resume", lambda: self.resume_run(run.run_dir)), ("Don't offer again", lambda: self._dismiss_run(run))],
        )

    def _dismiss_run(self, run: InterruptedRun) -> None:
        dismissed = list(self.settings.value("runs/dismissed", []) or [])
        self.settings.set_value("runs/dismissed", dismissed + [str(run.run_dir)])

    # --- files ------------------------------------------------------------------------------------
    def _open_model_file(self) -> None:
        self.show_page(TRAIN)
        self.train_page.model_picker.browse_file()

    def _open_model_folder(self) -> None:
        self.show_page(TRAIN)
        self.train_page.model_picker.browse_folder()

    def _open_dataset_file(self) -> None:
        self.show_page(TRAIN)
        self.train_page.dataset_picker.browse_file()

    def _open_dataset_folder(self) -> None:
        self.show_page(TRAIN)
        self.train_page.dataset_picker.browse_folder()

    def open_paths(self, paths: list[str]) -> list[str]:
        """Use paths (from a drop or the command line): job files load, models and datasets fill the setup."""
        used = []
        for path in paths:
            if path.lower().endswith(".toml") and Path(path).is_file():
                if self.train_page.load_job(path):
                    used.append(f"job: {path}")
            else:
                used += self.train_page.handle_drop([path])
        if used:
            self.show_page(TRAIN)
            self.statusBar().showMessage("Using " + "; ".join(used), 8000)
        return used

    def appearance_mode(self) -> str:
        """The saved Light/Dark/System choice ("System" when none or unknown)."""
        mode = str(self.settings.value(appearance.SETTING, "System"))
        return mode if mode in appearance.MODES else "System"

    def set_appearance(self, mode: str) -> None:
        """Apply and remember Light, Dark or System; widgets and charts follow the palette."""
        appearance.apply(mode)
        self.settings.set_value(appearance.SETTING, mode)
        self.actions_[f"appearance_{mode.lower()}"].setChecked(True)

    def _highlight_drop_zones(self, on: bool) -> None:
        for picker in (self.train_page.model_picker, self.train_page.dataset_picker):
            picker.set_highlight(on)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Accept usable local files and folders anywhere on the window and light up the drop
        zones; refuse the others at once, saying why in the status bar."""
        paths = local_paths(event.mimeData())
        reasons = drops.refusals(paths)
        if paths and not reasons:
            event.acceptProposedAction()
            self._highlight_drop_zones(True)
        else:
            event.ignore()
            if reasons:
                self.statusBar().showMessage("Cannot use this drop: " + " ".join(reasons), 10000)

    def dragLeaveEvent(self, event) -> None:
        """The drag left the window: the drop zones go back to normal."""
        self._highlight_drop_zones(False)

    def dropEvent(self, event: QDropEvent) -> None:
        """A dropped model, dataset or job file fills the Train page."""
        self._highlight_drop_zones(False)
        if self.open_paths(local_paths(event.mimeData())):
            event.acceptProposedAction()

    # --- closing ----------------------------------------------------------------------------------
    def _about(self) -> None:
        QMessageBox.about(self, "About Senior Intern", f"<b>Senior Intern</b> {__version__}<br/>"
                          "Local LoRA fine-tuning on your own code and data.<br/>"
                          f"Settings: {self.settings.file_name}")

    def showEvent(self, event: QShowEvent) -> None:
        """On the first show the frame (title bar, borders) is known: keep all of it on screen."""
        super().showEvent(event)
        if not self._placed:
            self._placed = True
            screen_fit.keep_on_screen(self)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Offer to cancel a run in progress (it saves a checkpoint); remember window and job."""
        if self.runner.running:
            answer = QMessageBox.question(self, "A run is in progress",
                                          "Cancel the run and quit? A checkpoint is saved so you can resume it later.",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self.statusBar().showMessage("Cancelling the run and saving a checkpoint…")
            self.runner.shutdown()
        self.playground_page.shutdown()
        self.train_page.stop_background_work()
        self.settings.set_geometry(self.saveGeometry())
        self.settings.set_current_page(self.stack.currentIndex())
        job, problems = self.train_page.current_job()
        if not problems:
            self.settings.set_last_job(job)
        self.settings.sync()
        event.accept()
