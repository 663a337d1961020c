"""Live charts of a run: loss (raw, smoothed, validation), learning rate, gradient norm, GPU, CPU/RAM.

Events only append to numpy buffers (cheap, in the GUI thread); a ``QTimer`` a few times a
second pushes the buffers into curves that were created once (``setData``), downsampled to at
most ``max_points`` per curve so a long run draws as fast as a short one.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QGridLayout, QLabel, QStackedWidget, QWidget

from senior_intern.training.events import Evaluated, Progress

REFRESH_MS = 250  # 4 redraws per second
MAX_POINTS = 2000
SMOOTHING = 0.9  # weight of the exponential moving average on the training loss

BLUE, ORANGE, GREEN, RED, PURPLE = "#4c8bf5", "#f28e2b", "#59a14f", "#e15759", "#b07aa1"


class Series:
    """Growing x/y arrays with amortised O(1) append (and an optional running EMA of y)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, x: float, y: float) -> None:
        """Add one point (``None`` y is stored as NaN, which the curve leaves out)."""
        if self._n == len(self._x):
            self._x = np.concatenate([self._x, np.empty(len(self._x))])
            self._y = np.concatenate([self._y, np.empty(len(self._y))])
        self._x[self._n] = x
        self._y[self._n] = math.nan if y is None else y
        self._n += 1

    @property
    def x(self) -> np.ndarray:
        """X values [n] (a view)."""
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        """Y values [n] (a view)."""
        return self._y[: self._n]

    def clear(self) -> None:
        """Drop all points."""
        self._n = 0


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` points [m] from [n]: the min and max of each bucket, in order.

    Keeps spikes visible (a loss spike survives) while bounding drawing cost.
    """
    n = len(x)
    if n <= max_points:
        return x, y
    size = math.ceil(n / max(1, max_points // 2))
    full = (n // size) * size
    xs, ys = x[:full].reshape(-1, size), y[:full].reshape(-1, size)
    filled = np.where(np.isnan(ys), np.nanmean(ys) if np.isfinite(ys).any() else 0.0, ys)
    rows = np.arange(len(ys))
    a, b = filled.argmin(axis=1), filled.argmax(axis=1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    out_x = np.column_stack([xs[rows, lo], xs[rows, hi]]).ravel()
    out_y = np.column_stack([ys[rows, lo], ys[rows, hi]]).ravel()
    if out_x[-1] != x[-1]:  # always end on the newest point
        out_x, out_y = np.append(out_x, x[-1]), np.append(out_y, y[-1])
    return out_x, out_y


def smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average [n] of ``values`` [n]; NaNs are skipped (kept as NaN)."""
    out = np.full(len(values), math.nan)
    acc, count = 0.0, 0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            continue
        acc = weight * acc + (1 - weight) * v
        count += 1
        out[i] = acc / (1 - weight**count)
    return out


class _Smoother:
    """Incremental version of ``smooth`` for a growing series."""

    def __init__(self, weight: float = SMOOTHING) -> None:
        self.weight, self.acc, self.count = weight, 0.0, 0

    def add(self, v: float | None) -> float:
        if v is None or not math.isfinite(v):
            return math.nan
        self.acc = self.weight * self.acc + (1 - self.weight) * v
        self.count += 1
        return self.acc / (1 - self.weight**self.count)


def _pen(color: str, width: float = 1.5, alpha: int = 255) -> pg.QtGui.QPen:
    c = pg.mkColor(color)
    c.setAlpha(alpha)
    return pg.mkPen(c, width=width)


class ChartPanel(QWidget):
    """Five plots fed by ``add_progress`` / ``add_evaluation``; ``refresh()`` redraws changed curves."""

    def __init__(self, parent: QWidget | None = None, max_points: int = MAX_POINTS) -> None:
        super().__init__(parent)
        self.max_points = max_points
        self.series = {name: Series() for name in ("loss", "smoothed", "validation", "lr", "grad", "gpu_util", "gpu_mem", "cpu", "ram")}
        self._smoother = _Smoother()
        self._dirty = False
        self._has_gpu = False
        self.plots: dict[str, pg.PlotWidget] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        loss = self._plot("loss", "Loss", "step")
        loss.addLegend(offset=(-10, 10))
        self.curves = {
            "loss": loss.plot(name="loss", pen=_pen(BLUE, 1, 110)),
            "smoothed": loss.plot(name="smoothed", pen=_pen(BLUE, 2.2)),
            "validation": loss.plot(name="validation", pen=None, symbol="o", symbolSize=7, symbolBrush=ORANGE, symbolPen=None),
            "lr": self._plot("lr", "Learning rate", "step").plot(pen=_pen(GREEN)),
            "grad": self._plot("grad", "Gradient norm", "step").plot(pen=_pen(PURPLE)),
        }
        gpu = self._plot("gpu", "GPU (%)", "seconds")
        gpu.addLegend(offset=(-10, 10))
        gpu.setYRange(0, 100)
        self.curves["gpu_util"] = gpu.plot(name="utilisation", pen=_pen(RED))
        self.curves["gpu_mem"] = gpu.plot(name="memory", pen=_pen(ORANGE))
        system = self._plot("system", "CPU and RAM (%)", "seconds")
        system.addLegend(offset=(-10, 10))
        system.setYRange(0, 100)
        self.curves["cpu"] = system.plot(name="CPU", pen=_pen(BLUE))
        self.curves["ram"] = system.plot(name="RAM", pen=_pen(GREEN))
        self.no_gpu = QLabel("No GPU in use: training runs on the CPU.")
        self.no_gpu.setWordWrap(True)
        self.gpu_stack = QStackedWidget()
        self.gpu_stack.addWidget(self.no_gpu)
        self.gpu_stack.addWidget(self.plots["gpu"])
        grid.addWidget(self.plots["loss"], 0, 0, 1, 2)
        grid.addWidget(self.plots["lr"], 0, 2)
        grid.addWidget(self.plots["grad"], 1, 0)
        grid.addWidget(self.gpu_stack, 1, 1)
        grid.addWidget(self.plots["system"], 1, 2)
        self._apply_palette()
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)

    def _plot(self, key: str, title: str, x_label: str) -> pg.PlotWidget:
        plot = pg.PlotWidget()
        plot.setTitle(title)
        plot.setLabel("bottom", x_label)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setMouseEnabled(x=True, y=False)
        plot.getPlotItem().setClipToView(True)
        plot.setMinimumHeight(110)
        self.plots[key] = plot
        return plot

    def _apply_palette(self) -> None:
        palette = self.palette()
        background = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text)
        for plot in self.plots.values():
            plot.setBackground(background)
            item = plot.getPlotItem()
            item.titleLabel.setText(item.titleLabel.text, color=text)
            for name in ("left", "bottom"):
                axis = item.getAxis(name)
                axis.setPen(text)
                axis.setTextPen(text)

    def changeEvent(self, event: QEvent) -> None:
        """Follow light/dark palette changes of the system."""
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    # --- data in ----------------------------------------------------------------------------------
    def add_progress(self, p: Progress) -> None:
        """Buffer one optimizer step's metrics and hardware readings (drawn at the next refresh)."""
        m, hw, s = p.metrics, p.hardware, self.series
        s["loss"].append(m.step, m.loss)
        s["smoothed"].append(m.step, self._smoother.add(m.loss))
        s["lr"].append(m.step, m.learning_rate)
        if m.grad_norm is not None:
            s["grad"].append(m.step, m.grad_norm)
        if hw.cpu_utilization is not None:
            s["cpu"].append(p.elapsed, hw.cpu_utilization)
        if hw.ram_total:
            s["ram"].append(p.elapsed, hw.ram_utilization)
        if hw.gpus:
            self._has_gpu = True
            if hw.gpu_utilization is not None:
                s["gpu_util"].append(p.elapsed, hw.gpu_utilization)
            s["gpu_mem"].append(p.elapsed, hw.gpu_memory_utilization)
        self._dirty = True

    def add_evaluation(self, e: Evaluated) -> None:
        """Buffer one validation point."""
        self.series["validation"].append(e.global_step, e.validation_loss)
        self._dirty = True

    def set_history(self, steps: list, losses: list, val_steps: list, val_losses: list, lrs: list | None = None) -> None:
        """Fill the loss (and learning-rate) curves from a finished run's history."""
        self.clear()
        for i, (step, loss) in enumerate(zip(steps, losses)):
            self.series["loss"].append(step, loss)
            self.series["smoothed"].append(step, self._smoother.add(loss))
            if lrs and i < len(lrs):
                self.series["lr"].append(step, lrs[i])
        for step, loss in zip(val_steps, val_losses):
            self.series["validation"].append(step, loss)
        self._dirty = True
        self.refresh()

    def clear(self) -> None:
        """Empty every chart (a new run starts)."""
        for series in self.series.values():
            series.clear()
        self._smoother = _Smoother()
        self._has_gpu = False
        self._dirty = True
        self.refresh()

    # --- drawing ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Redraw periodically (while a run is in progress)."""
        self.timer.start()

    def stop(self) -> None:
        """Stop periodic redraws and draw the final state once."""
        self.timer.stop()
        self.refresh()

    def refresh(self) -> None:
        """Push buffered points into the curves (downsampled); nothing to do when nothing changed."""
        if not self._dirty:
            return
        self._dirty = False
        for name, curve in self.curves.items():
            series = self.series[name]
            x, y = downsample(series.x, series.y, self.max_points)
            curve.setData(x, y, connect="finite")
        self.gpu_stack.setCurrentIndex(1 if self._has_gpu else 0)

    def point_count(self, name: str) -> int:
        """Points buffered for a curve (``loss``, ``validation``, ``lr``, ``grad``, ``cpu``, ...)."""
        return len(self.series[name])

    def drawn_count(self, name: str) -> int:
        """Points the curve currently draws."""
        data = self.curves[name].getData()[0]
        return 0 if data is None else len(data)
