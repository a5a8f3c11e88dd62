"""--log_to tensorboard: event files in the run folder."""
from __future__ import annotations

import atexit
from pathlib import Path

import numpy as np
import torch

from utils.tracking.figures import window_id
from utils.tracking.protocol import SteppedSink


class TensorBoardSink(SteppedSink):
    """Event files in <run folder>/tensorboard/, raw values every step (TensorBoard smooths
    them itself). A resumed run writes into the same folder, so it is the same TensorBoard
    run; its writer opens with purge_step at its first step, which makes TensorBoard drop
    what an interrupted process logged after the checkpoint (this process logs it again)."""
    package = "tensorboard"
    summary = "TensorBoard event files in the run folder"

    def __init__(self, options, run_dir: Path, panels):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter     # ImportError without tensorboard
        self.folder, self.writer_type, self.writer = run_dir / "tensorboard", SummaryWriter, None

    def begin(self, step: int) -> None:
        self.writer = self.writer_type(str(self.folder), purge_step=step)
        atexit.register(self.writer.close)        # the last events, also after Ctrl-C

    def options(self, options: dict) -> None:
        """The HParams tab: the options the run started with, as one session (no experiment
        summary, so TensorBoard offers every scalar as a metric). TensorBoard keeps a tag's
        first metadata only, so a resumed process writes none (options.json has its own)."""
        from torch.utils.tensorboard.summary import hparams
        if options.get("resume"):
            return
        _, session_start, _ = hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                       for k, v in options.items()}, {})
        self.at(None, lambda step: self.writer._get_file_writer().add_summary(session_start, step))

    def scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        def write(step):
            for name, value in values.items():
                self.writer.add_scalar(f"{group}/{name}", value, step)
        self.at(step, write)

    def images(self, title: str, grid: np.ndarray, step: int | None, epoch: int) -> None:
        self.at(step, lambda step: self.writer.add_image(f"faces/{window_id(title)}", grid,
                                                         step, dataformats="HWC"))

    def audio(self, title: str, clips: list, sample_rate: int, step: int | None) -> None:
        def write(step):
            for caption, waveform, _ in clips:
                self.writer.add_audio(f"speech/{window_id(title)}/{window_id(caption)}",
                                      torch.from_numpy(waveform).reshape(1, -1), step,
                                      sample_rate=sample_rate)
        self.at(step, write)

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()
