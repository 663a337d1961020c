"""The export and merge dialogs, and the app entry point."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QFileDialog, QLabel

from senior_intern.gui.dialogs import ExportChoice, ExportGgufDialog, MergeChoice, MergeDialog


def _ok(dialog) -> bool:
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()


def test_export_dialog_needs_both_paths_and_returns_the_choice(qtbot, monkeypatch, tmp_path):
    dialog = ExportGgufDialog(None, "", str(tmp_path / "a.gguf"))
    qtbot.addWidget(dialog)
    assert not _ok(dialog)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(tmp_path / "base.gguf"), "")))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(tmp_path / "out.gguf"), "")))
    dialog._browse_base()
    dialog._browse_out()
    assert _ok(dialog)
    assert dialog.base.text().endswith("base.gguf") and dialog.out.text().endswith("out.gguf")
    help_label = dialog.findChild(QLabel, "typeHelp")  # each type says what it means
    assert dialog.minimumWidth() >= 680 and "2 bytes per weight" in help_label.text()
    dialog.dtype.setCurrentText("q8_0")
    assert "8-bit" in help_label.text()

    monkeypatch.setattr(ExportGgufDialog, "exec", lambda self: QDialog.DialogCode.Accepted)
    choice = ExportGgufDialog.ask(None, "/m.gguf", "/o.gguf")
    assert choice == ExportChoice("/m.gguf", "/o.gguf", "f16")
    monkeypatch.setattr(ExportGgufDialog, "exec", lambda self: QDialog.DialogCode.Rejected)
    assert ExportGgufDialog.ask(None, "/m.gguf", "/o.gguf") is None


def test_merge_dialog_puts_the_new_folder_in_the_chosen_parent(qtbot, monkeypatch, tmp_path):
    dialog = MergeDialog(None, "/m.gguf", str(tmp_path / "x" / "merged"))
    qtbot.addWidget(dialog)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "elsewhere")))
    dialog._browse_out()
    assert dialog.out.text() == str(tmp_path / "elsewhere" / "merged")
    monkeypatch.setattr(MergeDialog, "exec", lambda self: QDialog.DialogCode.Accepted)
    assert MergeDialog.ask(None, "/m", "/o") == MergeChoice("/m", "/o", "float16")


def test_main_opens_the_window_with_paths_from_the_command_line(qtbot, monkeypatch, tmp_path, messages, tiny_job):
    from senior_intern.gui import app as app_module
    from senior_intern.gui.settings import AppSettings
    from tests.gui.conftest import write_dataset

    AppSettings().set_last_job(tiny_job)  # main() uses the default settings; keep the demo model out of this test
    data = write_dataset(tmp_path / "cli.jsonl", n=6)
    seen = []

    def fake_exec(self=None):
        windows = [w for w in QApplication.topLevelWidgets() if type(w).__name__ == "MainWindow" and w.isVisible()]
        seen.extend(w.train_page.dataset_picker.path() for w in windows)
        for w in windows:
            w.tasks.wait()
            w.close()
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)
    assert app_module.main([str(data)]) == 0
    assert str(data) in seen
    assert app_module.parse_args(["a", "b"]).paths == ["a", "b"]
