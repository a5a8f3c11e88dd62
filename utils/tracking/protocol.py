"""What every live output of --log_to offers the Visualizer."""
from __future__ import annotations

from typing import Callable, ClassVar, Protocol

import numpy as np


class Sink(Protocol):
    """A live output, built as `Sink(options, run_dir, panels)` (`panels` as in
    figures.panels_for). Building one raises ImportError when its `package` is missing.
    Each sink has the same five calls, the last at each epoch's end; `step` is None before
    the first training step."""
    package: ClassVar[str]      # the pip package to name when its import fails
    summary: ClassVar[str]      # what --log_to NAME gives, for --help

    def options(self, options: dict) -> None: ...

    def scalars(self, group: str, step: int, values: dict[str, float]) -> None: ...

    def images(self, title: str, grid: np.ndarray, step: int | None, epoch: int) -> None: ...

    def audio(self, title: str, clips: list, sample_rate: int, step: int | None) -> None:
        """`clips`: [(caption, waveform, wav path)]."""

    def flush(self) -> None: ...


class SteppedSink:
    """Base of the trackers that place every record at a step (TensorBoard, W&B). What comes
    before the first training step (the speech, sent as training starts) waits for it: on
    --resume that is the step after the checkpoint's, so a resumed run writes nothing at a
    step the run already holds. Tags: train/<figure>, evaluation/<figure>,
    faces/<visdom window>, speech/<visdom window>."""

    def __init__(self):
        self.started, self.waiting = False, []

    def at(self, step: int | None, write: Callable[[int], None]) -> None:
        if step is None and not self.started:
            self.waiting.append(write)
            return
        if not self.started:
            self.started = True
            self.begin(step)
            for early in self.waiting:
                early(step)
        write(step)

    def begin(self, step: int) -> None:
        """Called once, at the first step."""
