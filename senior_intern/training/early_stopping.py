"""``EarlyStopping``: stop when the validation loss stops improving (spec v0.8.3i)."""

from __future__ import annotations

import enum
import math
from typing import Any


class EarlyStoppingMode(enum.StrEnum):
    """Whether smaller (loss) or larger (accuracy) values are better."""

    MIN = "min"
    MAX = "max"


class EarlyStopping:
    """Counts evaluations without improvement; ``should_stop`` once ``patience`` is reached.

    An improvement is a value below ``best - min_delta`` (mode min) or above
    ``best + min_delta`` (mode max). ``patience == 0`` disables stopping but still tracks the best.
    """

    def __init__(self, patience: int = 5, min_delta: float = 1e-4, mode: EarlyStoppingMode = EarlyStoppingMode.MIN) -> None:
        if patience < 0:
            raise ValueError("Early-stopping patience must not be negative")
        if min_delta < 0:
            raise ValueError("Early-stopping min delta must not be negative")
        self.patience = patience
        self.min_delta = min_delta
        self.mode = EarlyStoppingMode(mode)
        self.reset()

    def reset(self) -> None:
        """Forget every value seen."""
        self.counter = 0
        self.best_value = math.inf if self.mode is EarlyStoppingMode.MIN else -math.inf
        self.should_stop = False

    def step(self, value: float) -> bool:
        """Record one evaluation; return True when it improved on the best value."""
        if math.isnan(value):
            improved = False
        elif self.mode is EarlyStoppingMode.MIN:
            improved = value < self.best_value - self.min_delta
        else:
            improved = value > self.best_value + self.min_delta
        if improved:
            self.best_value = value
            self.counter = 0
            return True
        self.counter += 1
        if self.patience and self.counter >= self.patience:
            self.should_stop = True
        return False

    @property
    def evaluations_since_improvement(self) -> int:
        """Evaluations since the last improvement (the spec's EpochsSinceImprovement)."""
        return self.counter

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for checkpoints."""
        best = self.best_value if math.isfinite(self.best_value) else None
        return {"counter": self.counter, "best_value": best, "should_stop": self.should_stop}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned."""
        self.counter = int(state["counter"])
        best = state.get("best_value")
        self.best_value = float(best) if best is not None else (math.inf if self.mode is EarlyStoppingMode.MIN else -math.inf)
        self.should_stop = bool(state.get("should_stop", False))
