"""Live charts of a run: loss (raw, smoothed, validation), learning rate, gradient norm, GPU, CPU/RAM.

Events only append to numpy buffers (cheap, in the GUI thread); a ``QTimer`` pushes the buffers
into curves that were created once (``setData``), downsampled to at most ``max_points`` per curve
so a long run draws as fast as a short one. Each tick redraws one chart, in turn, so one repaint
never holds the event loop for long: with five charts each one is redrawn about four times a second.

While a run is in progress the GPU and CPU/RAM charts are fed by their own once-a-second reading
of the machine (``start_hardware``), so they move between steps, not only when a step ends. An
empty chart (a new run) goes back to its starting axes.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QStackedWidget, QWidget

from senior_intern.gui.plot_style import PaletteFollower
from senior_intern.gui.series import MAX_POINTS, Series, Smoother, downsample, sticky_range, time_extent
from senior_intern.training.events import Evaluated, Progress

TICK_MS = 50  # one chart per tick: each of the five is redrawn about every 250 ms
HARDWARE_TICK_MS = 1000  # the hardware charts' own reading of the machine
EMPTY_TIME_RANGE = (0.0, 60.0)  # seconds shown by an empty hardware chart

BLUE, ORANGE, GREEN, RED, PURPLE = "#4c8bf5", "#f28e2b", "#59a14f", "#e15759", "#b07aa1"
_CURVES_OF = {"loss": ("loss", "smoothed", "validation"), "lr": ("lr",), "grad": ("grad",),
              "gpu": ("gpu_util", "gpu_mem"), "system": ("cpu", "ram")}


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
        self._smoother = Smoother()
        self._dirty: set[str] = set()
        self._turn = 0
        self._ranges: dict[tuple[str, str], tuple[float, float]] = {}
        self.total_steps = 0  # x extent of the step charts, from the run's Progress events
        self._stopping = False
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
        self.no_gpu = QLabel("GPU\n\nNo GPU in use: this run trains on the CPU.")
        self.no_gpu.setWordWrap(True)
        self.no_gpu.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_gpu.setFrameShape(QFrame.Shape.StyledPanel)
        self.gpu_stack = QStackedWidget()
        self.gpu_stack.addWidget(self.no_gpu)
        self.gpu_stack.addWidget(self.plots["gpu"])
        grid.addWidget(self.plots["loss"], 0, 0, 1, 2)
        grid.addWidget(self.plots["lr"], 0, 2)
        grid.addWidget(self.plots["grad"], 1, 0)
        grid.addWidget(self.gpu_stack, 1, 1)
        grid.addWidget(self.plots["system"], 1, 2)
        for column in range(3):  # equal columns, also when some charts are hidden (adapter details)
            grid.setColumnStretch(column, 1)
        self.palette_follower = PaletteFollower(self, list(self.plots.values()))
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.refresh_next)
        self.hardware_timer = QTimer(self)
        self.hardware_timer.setInterval(HARDWARE_TICK_MS)
        self.hardware_timer.timeout.connect(self._sample_hardware)
        self._monitor = None
        self._hardware_started = 0.0

    def _plot(self, key: str, title: str, x_label: str) -> pg.PlotWidget:
        plot = pg.PlotWidget()
        plot.setTitle(title)
        plot.setLabel("bottom", x_label)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setMouseEnabled(x=False, y=False)
        plot.disableAutoRange()  # ranges are set by _fit, and change rarely (axis labels are costly to draw)
        plot.getPlotItem().setClipToView(True)
        plot.setMinimumHeight(110)
        self.plots[key] = plot
        return plot

    # --- data in ----------------------------------------------------------------------------------
    def add_progress(self, p: Progress) -> None:
        """Buffer one optimizer step's metrics and hardware readings (drawn at the next refresh)."""
        m, hw, s = p.metrics, p.hardware, self.series
        self.total_steps = p.total_steps
        self._dirty.update(("loss", "lr", "grad", "system"))
        s["loss"].append(m.step, m.loss)
        s["smoothed"].append(m.step, self._smoother.add(m.loss))
        s["lr"].append(m.step, m.learning_rate)
        if m.grad_norm is not None:
            s["grad"].append(m.step, m.grad_norm)
        if not self.hardware_timer.isActive():  # the page's own readings cover the hardware while live
            self.add_hardware(p.elapsed, hw)

    def add_hardware(self, seconds: float, hw) -> None:
        """Buffer one reading of the machine (``HardwareMetrics``) at ``seconds`` into the run."""
        s = self.series
        self._dirty.add("system")
        if hw.cpu_utilization is not None:
            s["cpu"].append(seconds, hw.cpu_utilization)
        if hw.ram_total:
            s["ram"].append(seconds, hw.ram_utilization)
        if hw.gpus:
            self._has_gpu = True
            self._dirty.add("gpu")
            if hw.gpu_utilization is not None:
                s["gpu_util"].append(seconds, hw.gpu_utilization)
            s["gpu_mem"].append(seconds, hw.gpu_memory_utilization)

    def start_hardware(self, started_at: float) -> None:
        """Read the machine every second for the GPU and CPU/RAM charts (``started_at``: the run's
        start on ``time.monotonic``, the x origin). The first reading comes after one tick: psutil's CPU
        figure covers the time since the previous reading, so one taken at once would say 0%."""
        from senior_intern.hardware.monitor import HardwareMonitor

        if self._monitor is None:
            self._monitor = HardwareMonitor()
        self._hardware_started = started_at
        self.hardware_timer.start()

    def stop_hardware(self) -> None:
        """Stop the once-a-second readings (the run ended)."""
        self.hardware_timer.stop()

    def _sample_hardware(self) -> None:
        if self._monitor is None:
            return
        try:
            hw = self._monitor.sample()
        except Exception:  # a reading that fails (a GPU driver hiccup) skips one point
            return
        self.add_hardware(max(0.0, time.monotonic() - self._hardware_started), hw)
        if not self.timer.isActive():
            self.refresh()

    def add_evaluation(self, e: Evaluated) -> None:
        """Buffer one validation point."""
        self.series["validation"].append(e.global_step, e.validation_loss)
        self._dirty.add("loss")

    def set_history(self, steps: list, losses: list, val_steps: list, val_losses: list, lrs: list | None = None,
                    grads: list | None = None, total_steps: int = 0) -> None:
        """Fill the loss, learning-rate (and gradient-norm) curves from a run's history."""
        self.clear()
        self.total_steps = total_steps
        for i, (step, loss) in enumerate(zip(steps, losses)):
            self.series["loss"].append(step, loss)
            self.series["smoothed"].append(step, self._smoother.add(loss))
            if lrs and i < len(lrs):
                self.series["lr"].append(step, lrs[i])
            if grads and i < len(grads) and grads[i] is not None:
                self.series["grad"].append(step, grads[i])
        for step, loss in zip(val_steps, val_losses):
            self.series["validation"].append(step, loss)
        self._dirty.update(("loss", "lr", "grad"))
        self.refresh()

    def clear(self) -> None:
        """Empty every chart (a new run starts)."""
        for series in self.series.values():
            series.clear()
        self._smoother = Smoother()
        self._has_gpu = False
        self._ranges.clear()
        self.total_steps = 0
        self._dirty.update(self.plots)
        if not self.timer.isActive():
            self.refresh()

    # --- drawing ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Redraw periodically (while a run is in progress)."""
        self._stopping = False
        self.timer.start()

    def stop(self) -> None:
        """Stop the periodic redraws once the last changes are drawn (still one chart per tick)."""
        self._stopping = True
        if not self.timer.isActive():
            self.refresh()

    def refresh(self) -> None:
        """Redraw every chart whose data changed (at the end of a run, and in tests)."""
        while self._dirty:
            self._draw(self._dirty.pop())

    def refresh_next(self) -> None:
        """Redraw the next chart (round robin) whose data changed; the timer calls this."""
        order = list(self.plots)
        if self._stopping and not self._dirty:
            self.timer.stop()
            return
        for i in range(len(order)):
            key = order[(self._turn + i) % len(order)]
            if key in self._dirty:
                self._dirty.discard(key)
                self._turn = (self._turn + i + 1) % len(order)
                self._draw(key)
                return

    def _draw(self, key: str) -> None:
        for name in _CURVES_OF[key]:
            series = self.series[name]
            x, y = downsample(series.x, series.y, self.max_points)
            self.curves[name].setData(x, y, connect="finite")
        self._fit(key)
        if key == "gpu":
            self.gpu_stack.setCurrentIndex(1 if self._has_gpu else 0)

    def _fit(self, key: str) -> None:
        """Set the chart's ranges when its data left them (steps: the whole run; time: doubling)."""
        xs = [self.series[n].x for n in _CURVES_OF[key] if len(self.series[n])]
        box = self.plots[key].getViewBox()
        if not xs:  # empty (a new run): back to the starting axes, not the last run's
            start = EMPTY_TIME_RANGE if key in ("gpu", "system") else (0.0, float(max(self.total_steps, 1)))
            if self._ranges.get((key, "x")) != start:
                self._ranges[(key, "x")] = start
                box.setXRange(*start, padding=0.04)
                if key not in ("gpu", "system"):
                    self._ranges.pop((key, "y"), None)
                    box.setYRange(0.0, 1.0, padding=0)
            return
        x_max = float(max(x[-1] for x in xs))
        if key in ("gpu", "system"):
            x_range = (0.0, time_extent(x_max))
        else:
            x_range = (0.0, float(max(self.total_steps, x_max, 1)))
        if self._ranges.get((key, "x")) != x_range:
            self._ranges[(key, "x")] = x_range
            box.setXRange(*x_range, padding=0.04)
        if key in ("gpu", "system"):
            return  # percentages: the y range is fixed at 0..100
        ys = np.concatenate([self.series[n].y for n in _CURVES_OF[key]])
        ys = ys[np.isfinite(ys)]
        if len(ys):
            y_range = sticky_range(self._ranges.get((key, "y")), float(ys.min()), float(ys.max()))
            if y_range is not None:
                self._ranges[(key, "y")] = y_range
                box.setYRange(*y_range, padding=0)

    def point_count(self, name: str) -> int:
        """Points buffered for a curve (``loss``, ``validation``, ``lr``, ``grad``, ``cpu``, ...)."""
        return len(self.series[name])

    def drawn_count(self, name: str) -> int:
        """Points the curve currently draws."""
        data = self.curves[name].getData()[0]
        return 0 if data is None else len(data)
