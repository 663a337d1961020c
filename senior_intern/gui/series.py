"""Chart data without Qt: growing series, downsampling, smoothing and stable axis ranges."""

from __future__ import annotations

import math

import numpy as np

MAX_POINTS = 2000
SMOOTHING = 0.9  # weight of the exponential moving average on the training loss


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


class Smoother:
    """Incremental version of ``smooth`` for a growing series."""

    def __init__(self, weight: float = SMOOTHING) -> None:
        self.weight, self.acc, self.count = weight, 0.0, 0

    def add(self, v: float | None) -> float:
        """Take the next value; return the smoothed value so far (NaN for a missing value)."""
        if v is None or not math.isfinite(v):
            return math.nan
        self.acc = self.weight * self.acc + (1 - self.weight) * v
        self.count += 1
        return self.acc / (1 - self.weight**self.count)


def sticky_range(current: tuple[float, float] | None, lo: float, hi: float, pad: float = 0.08) -> tuple[float, float] | None:
    """A new axis range for data in [lo, hi], or None to keep ``current``.

    The range is kept while it holds the data and is not more than four times wider than it, so
    an axis (whose labels are costly to draw) changes rarely instead of on every new point.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    span = hi - lo or abs(hi) * 0.1 or 1.0
    if current is not None and current[0] <= lo and hi <= current[1] and current[1] - current[0] <= 4 * span:
        return None
    return lo - pad * span, hi + pad * span


def time_extent(seconds: float) -> float:
    """End of a time axis that holds ``seconds``: 60 s, then doubling (120, 240, ...)."""
    extent = 60.0
    while extent < seconds:
        extent *= 2
    return extent
