"""How per-iteration figures are drawn wherever they are shown: smoothed, grouped into panels,
and named as windows or tags."""
from __future__ import annotations

import re

SMOOTHING = 0.9             # weight of the exponential moving average of per-iteration curves


class SmoothedCurve:
    """A plotted curve's smoothing: an exponential moving average with TensorBoard's start-up
    correction (no drag towards 0). Not the generator's EMA (models/ema.py)."""

    def __init__(self, weight: float = SMOOTHING):
        self.weight, self.mean, self.count = weight, 0.0, 0

    def update(self, value: float) -> float:
        self.count += 1
        self.mean = self.weight * self.mean + (1 - self.weight) * value
        return self.value

    @property
    def value(self) -> float:
        return self.mean / (1 - self.weight ** self.count)


def panels_for(names, panels) -> list[tuple[str, tuple[str, ...], bool]]:
    """The `panels` that hold any of `names`, then one panel for each name none of them
    holds. A panel is (title, figure names, logarithmic y axis); the caller owns the table
    (the GAN's is models/panels.py)."""
    names = list(names)
    chosen = [(title, tuple(n for n in members if n in names), log)
              for title, members, log in panels if any(n in names for n in members)]
    grouped = {n for _, members, _ in panels for n in members}
    return chosen + [(name, (name,), False) for name in names if name not in grouped]


def window_id(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
