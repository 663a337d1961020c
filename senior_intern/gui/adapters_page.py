"""The Adapters page: the adapter library as a sortable, filterable table with details and actions.

Every library call runs on a background thread (the library reads safetensors, which loads
torch); the table is rebuilt from the listing when a call finishes. Damaged adapters are listed
with the reason, and only deleting them or opening their folder is offered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSortFilterProxyModel, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QDesktopServices, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QTableView,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from senior_intern import paths
from senior_intern.gui.charts import ChartPanel
from senior_intern.gui.adapter_exports import EXPORT_FOR_RUNNERS, ExportActions
from senior_intern.gui.errors import describe_error
from senior_intern.gui.tasks import TaskRunner
from senior_intern.gui.widgets import BusyLine
from senior_intern.hardware.metrics import format_bytes

COLUMNS = ("Name", "Created", "Rank", "Alpha", "Final loss", "Best val. loss", "Size", "Base model", "Status")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ID_ROLE = Qt.ItemDataRole.UserRole + 2


def _library(root: str):
    from senior_intern.adapters.library import AdapterLibrary

    return AdapterLibrary(root)


def _details(root: str, adapter_id: str) -> tuple[Any, dict]:
    lib = _library(root)
    return lib.get(adapter_id), lib.metadata(adapter_id)


def _item(text: str, sort: Any = None) -> QStandardItem:
    item = QStandardItem(text)
    item.setEditable(False)
    item.setData(text if sort is None else sort, SORT_ROLE)
    return item


class AdaptersPage(ExportActions, QWidget):
    """The adapter library; ``try_adapter(id)`` asks the playground to open an adapter."""

    try_adapter = Signal(str)
    changed = Signal()  # the listing was refreshed
    export_progress = Signal(int, int)  # (tensors done, total), emitted from the export's thread

    def __init__(self, tasks: TaskRunner, root: str | Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.root = str(root or paths.adapters_dir())
        self.adapters: list[Any] = []
        self._select_after: str | None = None
        self._requested = False

        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name, description, base model…")
        self.filter.setClearButtonEnabled(True)
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.busy = BusyLine()
        self.empty_label = QLabel("No adapters yet: finish a training run, or import a PEFT adapter folder.")

        self.buttons: dict[str, QAction] = {}
        icon = lambda name: self.style().standardIcon(getattr(QStyle.StandardPixmap, name))  # noqa: E731
        actions = (("Refresh", self.refresh, "SP_BrowserReload"), ("Import…", self.import_dialog, "SP_DialogOpenButton"),
                   ("Rename…", self.rename_selected, "SP_FileDialogDetailedView"), ("Delete…", self.delete_selected, "SP_TrashIcon"),
                   ("Export GGUF…", self.export_gguf_selected, "SP_DialogSaveButton"),
                   ("Merge && export…", self.merge_selected, "SP_FileDialogNewFolder"),
                   (EXPORT_FOR_RUNNERS, self.export_for_runners_selected, "SP_DriveHDIcon"),
                   ("Open folder", self.open_folder_selected, "SP_DirOpenIcon"),
                   ("Try in playground", self.try_selected, "SP_MediaPlay"))
        toolbar = QToolBar()  # overflows into a menu when the window is narrow
        toolbar.setObjectName("adaptersToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for label, slot, pixmap in actions:
            action = toolbar.addAction(icon(pixmap), label)  # "&&" shows as "&" (a single "&" marks a mnemonic)
            action.triggered.connect(slot)
            toolbar.widgetForAction(action).setAutoRaise(False)  # drawn as a button, so it looks clickable
            self.buttons[label.replace("&&", "&")] = action

        self.info = {key: QLabel("–") for key in ("Name", "Id", "Path", "Base model", "Status")}
        info_form = QFormLayout()
        for key, label in self.info.items():
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            info_form.addRow(key, label)
        self.description = QPlainTextEdit()
        self.description.setPlaceholderText("Description")
        self.description.setMaximumHeight(80)
        self.save_description_button = QPushButton("Save description")
        self.save_description_button.clicked.connect(self.save_description)
        self.curve = ChartPanel()
        for key in ("grad", "system"):
            self.curve.plots[key].hide()
        self.curve.gpu_stack.hide()
        self.configs = QPlainTextEdit()
        self.configs.setReadOnly(True)
        details = QWidget()
        details_layout = QVBoxLayout(details)
        details_layout.addLayout(info_form)
        details_layout.addWidget(self.description)
        details_layout.addWidget(self.save_description_button, 0, Qt.AlignmentFlag.AlignRight)
        details_layout.addWidget(self.curve, 2)
        details_layout.addWidget(QLabel("Configuration"))
        details_layout.addWidget(self.configs, 1)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.table, 1)
        left_layout.addWidget(self.empty_label)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([500, 500])
        layout = QVBoxLayout(self)
        layout.addWidget(toolbar)
        layout.addWidget(self.filter)
        layout.addWidget(self.busy)
        self.export_bar = QProgressBar()
        self.export_bar.setFormat("Exporting: %v of %m tensors")
        self.export_bar.hide()
        layout.addWidget(self.export_bar)
        self.export_progress.connect(self._export_progress)
        layout.addWidget(splitter, 1)
        self._update_buttons()

    # --- listing ----------------------------------------------------------------------------------
    def set_root(self, root: str | Path) -> None:
        """Show the library in ``root``."""
        self.root = str(root)
        self.refresh()

    def ensure_loaded(self) -> None:
        """List the library once, the first time it is needed."""
        if not self._requested:
            self.refresh()

    def refresh(self, select: str | None = None) -> None:
        """Reload the listing in the background (then select ``select``, else keep the selection)."""
        self._requested = True
        if select:
            self._select_after = select
        self.busy.start("Reading the adapter library…")
        self.tasks.submit(lambda root: _library(root).list(), self.root, on_done=self._listed, on_error=self._failed)

    def _listed(self, adapters: list[Any]) -> None:
        self.busy.stop()
        keep, self._select_after = self._select_after or self.selected_id(), None
        self.adapters = adapters
        self.table.setSortingEnabled(False)
        self.model.removeRows(0, self.model.rowCount())
        for a in adapters:
            status = f"Damaged: {a.damaged}" if a.damaged else ("Imported" if a.imported else "OK")
            loss = "–" if a.final_loss is None else f"{a.final_loss:.4f}"
            best = "–" if a.best_validation_loss is None else f"{a.best_validation_loss:.4f}"
            row = [_item(a.name), _item(a.created[:19].replace("T", " ")), _item(str(a.rank or "–"), a.rank or 0),
                   _item(str(a.alpha or "–"), a.alpha or 0.0), _item(loss, a.final_loss if a.final_loss is not None else float("inf")),
                   _item(best, a.best_validation_loss if a.best_validation_loss is not None else float("inf")),
                   _item(format_bytes(a.size_bytes), a.size_bytes), _item(Path(a.base_model).name if a.base_model else "–"), _item(status)]
            row[0].setData(a.id, ID_ROLE)
            row[0].setToolTip(a.description or a.id)
            if a.damaged:
                for item in row:
                    item.setForeground(QBrush(QColor("#d32f2f")))
                    item.setToolTip(f"This adapter is damaged: {a.damaged}")
            self.model.appendRow(row)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        self.empty_label.setVisible(not adapters)
        if keep:
            self.select(keep)
        self._update_buttons()
        self.changed.emit()

    def _failed(self, exc: BaseException, title: str = "Adapter library") -> None:
        self.busy.stop()
        QMessageBox.warning(self, title, describe_error(exc))

    def select(self, adapter_id: str) -> bool:
        """Select the adapter with this id (clearing the filter if it hides it); True when found."""
        for attempt in range(2):
            for row in range(self.proxy.rowCount()):
                if self.proxy.index(row, 0).data(ID_ROLE) == adapter_id:
                    self.table.selectRow(row)
                    return True
            if attempt == 0 and self.filter.text():
                self.filter.clear()
        return False

    def selected_id(self) -> str | None:
        """Id of the selected adapter, or None."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].data(ID_ROLE) if rows else None

    def selected(self) -> Any | None:
        """The selected adapter's listing entry, or None."""
        adapter_id = self.selected_id()
        return next((a for a in self.adapters if a.id == adapter_id), None)

    def _selection_changed(self) -> None:
        self._update_buttons()
        a = self.selected()
        if a is None:
            self.tasks.forget("adapter details")
            for label in self.info.values():
                label.setText("–")
            self.description.setPlainText("")
            self.configs.setPlainText("")
            self.curve.clear()
            return
        self.info["Name"].setText(a.name)
        self.info["Id"].setText(a.id)
        self.info["Path"].setText(str(a.path))
        self.info["Base model"].setText(a.base_model or "–")
        self.info["Status"].setText(f"Damaged: {a.damaged}" if a.damaged else "OK")
        self.description.setPlainText(a.description)
        self.curve.clear()
        self.configs.setPlainText("")
        if not a.damaged:
            self.tasks.submit(_details, self.root, a.id, on_done=self._show_details,
                              on_error=lambda exc: self.configs.setPlainText(describe_error(exc)), latest="adapter details")
        else:
            self.tasks.forget("adapter details")

    def _show_details(self, details: tuple[Any, dict]) -> None:
        _, meta = details
        history = meta.get("history") or {}
        self.curve.set_history(history.get("step", []), history.get("loss", []), history.get("validation_step", []),
                               history.get("validation_loss", []), history.get("learning_rate"))
        shown = {k: meta[k] for k in ("lora_config", "training_config", "data_config", "dataset_path", "tags") if meta.get(k) is not None}
        self.configs.setPlainText(json.dumps(shown, indent=2) if shown else "No configuration recorded (imported adapter).")

    def _update_buttons(self) -> None:
        a = self.selected()
        usable = a is not None and not a.damaged
        for key in ("Rename…", "Export GGUF…", "Merge & export…", EXPORT_FOR_RUNNERS, "Try in playground"):
            self.buttons[key].setEnabled(usable)
        self.save_description_button.setEnabled(usable)
        self.description.setEnabled(usable)
        for key in ("Delete…", "Open folder"):
            self.buttons[key].setEnabled(a is not None)

    # --- actions ----------------------------------------------------------------------------------
    def _run(self, fn, *args, select: str | None = None, title: str = "Adapter library", name: str | None = None,
             result_path: Any = None, result_note: Any = None, cancellable: bool = False) -> None:
        """Run a library action as a named task. One that makes a file (``result_path``) is announced at its
        end by the window's activity notice, with Open folder / Copy path and ``result_note``'s next step."""
        self.busy.start(f"{name or title}…")

        def done(result: Any) -> None:
            """Show the new state of the library."""
            self.busy.stop()
            self.refresh(select=getattr(result, "id", None) or select)

        self.tasks.submit(fn, *args, on_done=done, on_error=lambda exc: self._failed(exc, title), on_cancelled=self.busy.stop,
                          name=name or title, control=cancellable, cancellable=cancellable, result_path=result_path,
                          result_note=result_note)

    def rename_selected(self) -> None:
        """Ask for a new name for the selected adapter."""
        a = self.selected()
        if a is None:
            return
        name, ok = QInputDialog.getText(self, "Rename adapter", "New name:", text=a.name)
        if ok and name.strip() and name.strip() != a.name:
            self._run(lambda: _library(self.root).rename(a.id, name), title="Rename adapter")

    def save_description(self) -> None:
        """Store the edited description."""
        a = self.selected()
        if a is not None:
            text = self.description.toPlainText()
            self._run(lambda: _library(self.root).set_description(a.id, text), title="Save description")

    def delete_selected(self) -> None:
        """Delete the selected adapter after confirmation."""
        a = self.selected()
        if a is None:
            return
        answer = QMessageBox.question(self, "Delete adapter", f"Delete the adapter “{a.name}” and its folder?\n{a.path}\nThis cannot be undone.",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self._run(lambda: _library(self.root).delete(a.id), title="Delete adapter")

    def import_dialog(self) -> None:
        """Copy a PEFT adapter folder into the library."""
        folder = QFileDialog.getExistingDirectory(self, "Import a PEFT adapter folder", str(Path.home()))
        if folder:
            self._run(lambda: _library(self.root).import_(folder), title="Import adapter", name="Adapter import",
                      result_path=lambda info: info.path)

    def open_folder_selected(self) -> None:
        """Open the selected adapter's folder in the file manager."""
        a = self.selected()
        if a is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(a.path)))

    def try_selected(self) -> None:
        """Open the selected adapter in the playground."""
        a = self.selected()
        if a is not None and not a.damaged:
            self.try_adapter.emit(a.id)

    def show_adapter(self, adapter_id: str, root: str | Path | None = None) -> None:
        """Show (and select) an adapter, switching library folder when it lives elsewhere."""
        if root is not None and str(root) != self.root:
            self.root = str(root)
        self.refresh(select=adapter_id)
