"""The Adapters page on real adapter folders: import, rename, describe, export GGUF, delete, damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog, QInputDialog, QLabel, QMessageBox

from senior_intern.gui.adapters_page import COLUMNS, ID_ROLE
from senior_intern.gui.dialogs import ExportChoice, ExportGgufDialog, MergeChoice, MergeDialog
from tests.conftest import make_tiny_llama


def save_peft_adapter(folder: Path, seed: int = 0) -> Path:
    """A real PEFT LoRA adapter (rank 4, q/v projections, non-zero B) for the tiny Llama."""
    import peft
    import torch

    model = make_tiny_llama(seed=1)
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture
def library_page(window, qtbot, tmp_path):
    """The Adapters page on an empty library in a temp folder, shown."""
    page = window.adapters_page
    window.show_page(2)
    with qtbot.waitSignal(page.changed, timeout=30000):
        page.set_root(tmp_path / "library")
    return page


def _rows(page) -> list[list[str]]:
    return [[page.proxy.index(r, c).data() for c in range(len(COLUMNS))] for r in range(page.proxy.rowCount())]


def _import(page, qtbot, monkeypatch, folder: Path) -> str:
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    with qtbot.waitSignal(page.changed, timeout=30000):
        page.buttons["Import…"].trigger()
    return page.selected_id()


def test_import_rename_describe_and_delete(library_page, qtbot, monkeypatch, tmp_path, messages):
    page = library_page
    assert _rows(page) == [] and not page.empty_label.isHidden()
    adapter_id = _import(page, qtbot, monkeypatch, save_peft_adapter(tmp_path / "peft-made"))
    assert adapter_id and adapter_id.startswith("peft-made")
    rows = _rows(page)
    assert len(rows) == 1 and rows[0][0] == "peft-made" and rows[0][2] == "4" and rows[0][-1] == "Imported"
    assert page.buttons["Rename…"].isEnabled() and page.buttons["Export GGUF…"].isEnabled()

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("Python helper", True)))
    with qtbot.waitSignal(page.changed, timeout=30000):
        page.buttons["Rename…"].trigger()
    assert _rows(page)[0][0] == "Python helper"
    assert page.info["Name"].text() == "Python helper"

    page.description.setPlainText("Trained on my code")
    with qtbot.waitSignal(page.changed, timeout=30000):
        page.save_description_button.click()
    meta = json.loads((Path(page.root) / adapter_id / "senior_intern.json").read_text())
    assert meta["name"] == "Python helper" and meta["description"] == "Trained on my code"

    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.No))
    page.buttons["Delete…"].trigger()
    assert (Path(page.root) / adapter_id).is_dir()
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    with qtbot.waitSignal(page.changed, timeout=30000):
        page.buttons["Delete…"].trigger()
    assert _rows(page) == [] and not (Path(page.root) / adapter_id).exists()
    assert messages == []


def test_export_gguf_through_the_ui(library_page, qtbot, monkeypatch, tmp_path, tiny_model_dir, messages):
    import gguf

    page = library_page
    adapter_id = _import(page, qtbot, monkeypatch, save_peft_adapter(tmp_path / "to-export"))
    out = tmp_path / "out" / "adapter.gguf"
    asked = []

    def ask(parent, base, default_out):
        asked.append((base, default_out))
        return ExportChoice(str(tiny_model_dir), str(out), "f16")

    monkeypatch.setattr(ExportGgufDialog, "ask", staticmethod(ask))
    with qtbot.waitSignal(page.changed, timeout=60000):
        page.buttons["Export GGUF…"].trigger()
    from senior_intern import paths

    assert asked and asked[0][1] == str(paths.exports_dir() / f"{adapter_id}.lora.gguf")  # beside the library
    notice = page.window().activity_notice  # no modal: the notice names the file and how to run it
    assert messages == [] and notice.isVisible() and str(out) in notice.label.text()
    assert f"--lora {out}" in notice.label.text() and notice.button("Open folder")
    reader = gguf.GGUFReader(str(out))
    names = [t.name for t in reader.tensors]
    assert any(n.endswith(".lora_a") for n in names) and len(names) == 2 * 2 * 2  # 2 layers x q,v x (a, b)
    assert page.selected_id() == adapter_id


def test_export_errors_are_readable(library_page, qtbot, monkeypatch, tmp_path, messages):
    page = library_page
    _import(page, qtbot, monkeypatch, save_peft_adapter(tmp_path / "x"))
    monkeypatch.setattr(ExportGgufDialog, "ask", staticmethod(lambda *a: ExportChoice(str(tmp_path / "missing.gguf"), str(tmp_path / "o.gguf"), "f16")))
    page.buttons["Export GGUF…"].trigger()
    qtbot.waitUntil(lambda: bool(messages), timeout=30000)
    kind, title, text = messages[-1]
    assert kind == "warning" and title == "Export GGUF" and "missing.gguf" in text and "Traceback" not in text


def test_merge_through_the_ui(library_page, qtbot, monkeypatch, tmp_path, tiny_model_dir, messages):
    page = library_page
    _import(page, qtbot, monkeypatch, save_peft_adapter(tmp_path / "to-merge"))
    out = tmp_path / "merged"
    defaults = []
    monkeypatch.setattr(MergeDialog, "ask", staticmethod(lambda parent, base, default: defaults.append(default)
                                                         or MergeChoice(str(tiny_model_dir), str(out), "float32")))
    with qtbot.waitSignal(page.changed, timeout=60000):
        page.buttons["Merge & export…"].trigger()
    assert (out / "config.json").is_file()
    from senior_intern import paths

    assert Path(defaults[0]).parent == paths.exports_dir()  # not the home folder
    notice = page.window().activity_notice
    assert messages == [] and "convert_hf_to_gguf.py" in notice.label.text() and str(out) in notice.label.text()


def test_damaged_adapters_are_listed_as_damaged(library_page, qtbot, monkeypatch, tmp_path):
    page = library_page
    broken = Path(page.root) / "broken-0001"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{}")
    with qtbot.waitSignal(page.changed, timeout=30000):
        page.buttons["Refresh"].trigger()
    rows = _rows(page)
    assert rows[0][-1].startswith("Damaged: ") and "adapter_model.safetensors is missing" in rows[0][-1]
    page.select("broken-0001")
    assert not page.buttons["Rename…"].isEnabled() and not page.buttons["Export GGUF…"].isEnabled()
    assert page.buttons["Delete…"].isEnabled() and page.info["Status"].text().startswith("Damaged")


def test_the_toolbar_actions_look_like_buttons(library_page):
    from PySide6.QtWidgets import QToolBar

    toolbar = library_page.findChild(QToolBar, "adaptersToolbar")
    for label, action in library_page.buttons.items():
        button = toolbar.widgetForAction(action)
        assert not button.autoRaise() and not action.icon().isNull(), label


def test_filter_sort_and_details(library_page, qtbot, monkeypatch, tmp_path):
    page = library_page
    for name in ("alpha-one", "beta-two"):
        _import(page, qtbot, monkeypatch, save_peft_adapter(tmp_path / name))
    assert len(_rows(page)) == 2
    page.filter.setText("BETA")
    assert [r[0] for r in _rows(page)] == ["beta-two"]
    page.filter.setText("")
    page.table.sortByColumn(0, page.table.horizontalHeader().sortIndicatorOrder().AscendingOrder)
    assert [r[0] for r in _rows(page)] == ["alpha-one", "beta-two"]
    first = page.proxy.index(0, 0).data(ID_ROLE)
    page.select(first)
    qtbot.waitUntil(lambda: "No configuration recorded" in page.configs.toPlainText(), timeout=10000)
    opened = []
    monkeypatch.setattr("senior_intern.gui.adapters_page.QDesktopServices.openUrl", lambda url: opened.append(url.toLocalFile()))
    page.buttons["Open folder"].trigger()
    assert opened == [str(Path(page.root) / first)]
    tried = []
    page.try_adapter.connect(tried.append)
    page.buttons["Try in playground"].trigger()
    assert tried == [first]


def test_export_for_runners_merged_with_progress_and_modelfile(library_page, qtbot, monkeypatch, tmp_path, messages):
    import gguf
    from PySide6.QtGui import QDesktopServices

    from senior_intern.gui.adapters_page import EXPORT_FOR_RUNNERS
    from senior_intern.gui.export_dialog import RunnerExport, RunnerExportDialog
    from tests.adapters.test_gguf_merge import write_tiny_llama_gguf
    from tests.conftest import make_tiny_llama

    page = library_page
    adapter_id = _import(page, qtbot, monkeypatch, save_peft_adapter(tmp_path / "to-export"))
    base = write_tiny_llama_gguf(tmp_path / "base.gguf", make_tiny_llama())
    out = tmp_path / "out" / "merged.gguf"
    monkeypatch.setattr(RunnerExportDialog, "ask", staticmethod(lambda *a: RunnerExport("merged", str(base), str(out), "q8_0", True, False)))
    opened, progress = [], []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile())))
    page.export_progress.connect(lambda done, total: progress.append((done, total, page.export_bar.isVisible())))
    assert page.buttons[EXPORT_FOR_RUNNERS].isEnabled()
    page.buttons[EXPORT_FOR_RUNNERS].trigger()
    notice = page.window().activity_notice  # the activity centre announces the file, with how to run it
    qtbot.waitUntil(lambda: notice.isVisible() and "GGUF export finished" in notice.label.text(), timeout=60000)
    text = notice.label.text()
    assert messages == [] and "Merged GGUF written" in text and "ollama create" in text
    total = len(gguf.GGUFReader(base).tensors)
    assert progress[-1] == (total, total, True) and len(progress) == total
    assert not page.export_bar.isVisible() and opened == [str(out.parent)]
    assert (out.parent / "Modelfile").read_text().startswith("FROM ./merged.gguf")
    assert notice.isVisible() and "GGUF export finished in" in notice.label.text() and str(out) in notice.label.text()
    assert notice.button("Open folder") and notice.button("Copy path")
    assert {t.name for t in gguf.GGUFReader(out).tensors} == {t.name for t in gguf.GGUFReader(base).tensors}
    # Again without "replace": a readable refusal, the file left alone
    size = out.stat().st_size
    messages.clear()
    page.buttons[EXPORT_FOR_RUNNERS].trigger()
    qtbot.waitUntil(lambda: bool(messages), timeout=60000)
    kind, title, text = messages[-1]
    assert kind == "warning" and "already exists" in text and "Traceback" not in text and out.stat().st_size == size
    assert not page.export_bar.isVisible() and page.selected_id() == adapter_id


def test_runner_export_dialog_types_follow_the_kind(qtbot, tmp_path):
    from PySide6.QtWidgets import QDialogButtonBox

    from senior_intern.gui.export_dialog import RunnerExportDialog

    dialog = RunnerExportDialog(None, str(tmp_path / "model"), str(tmp_path / "o.gguf"))
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()  # the base is not a .gguf
    dialog.base.setText(str(tmp_path / "model.gguf"))
    assert ok.isEnabled()
    assert [dialog.qtype.itemText(i) for i in range(dialog.qtype.count())][0] == "same"
    assert dialog.minimumWidth() >= 680  # both paths show whole
    help_label = dialog.findChild(QLabel, "typeHelp")
    dialog.qtype.setCurrentText("q4_0")
    assert "4-bit" in help_label.text() and dialog.qtype.toolTip() == help_label.text()
    dialog.kind.setCurrentIndex(1)
    choice = dialog.choice()
    assert choice.kind == "adapter" and choice.qtype == "f16" and choice.ollama and not choice.overwrite


def test_run_export_adapter_kind_writes_adapter_and_modelfile(tmp_path):
    import gguf

    from senior_intern.gui.export_dialog import RunnerExport, run_export
    from tests.adapters.test_gguf_merge import write_tiny_llama_gguf

    base = write_tiny_llama_gguf(tmp_path / "base.gguf", make_tiny_llama())
    out = tmp_path / "out" / "a.gguf"
    seen = []
    text = run_export(RunnerExport("adapter", str(base), str(out), "f16", True, False), str(save_peft_adapter(tmp_path / "p")),
                      lambda done, total: seen.append((done, total)))
    assert seen == [(0, 1), (1, 1)] and "--lora" in text and "ollama create a -f Modelfile" in text
    assert gguf.GGUFReader(out).get_field("general.type").contents() == "adapter"
    assert (out.parent / "Modelfile").read_text().splitlines()[1] == "ADAPTER ./a.gguf"
