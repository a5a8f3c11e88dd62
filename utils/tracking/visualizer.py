"""One Visualizer per run, created by the Trainer: it writes every figure to the run folder
(log.jsonl, PNG grids, wav clips, a static index.html) and to each live output of --log_to."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from utils.files import JsonLog, write_json
from utils.images import save_png
from utils.tracking.figures import window_id
from utils.tracking.run_page import write_run_page
from utils.tracking.sinks import live_sinks


class Visualizer:
    """What a run shows, behind a few calls (as CycleGAN's util/visualizer.py).

    Everything goes to `checkpoints/<save_path>/`: options.json, log.jsonl (one JSON line
    per figure: `kind` is start, iteration, evaluation, epoch, image or speech), the PNG
    grids, the wav clips and index.html; log.jsonl is the one complete record. The same
    figures go to each live output of --log_to (`sinks`: visdom, TensorBoard, W&B).
    `panels` groups the per-iteration figures in visdom and index.html (as
    figures.panels_for); the trainer passes the GAN's table, models/panels.py.
    """

    def __init__(self, run_dir, options, panels=()):
        self.run_dir, self.panels = Path(run_dir), panels
        write_json(self.run_dir / "options.json", vars(options))
        self.log = JsonLog(self.run_dir / "log.jsonl")
        # A resumed run continues the log (trim_log drops what it will write again).
        resumed = getattr(options, "resume", None)
        self.log.write(kind="resume" if resumed else "start", save_path=options.save_path)
        self.step: int | None = None        # None until the first training step is logged
        self.sinks = live_sinks(options, self.run_dir, panels)
        for sink in self.sinks:
            sink.options(vars(options))

    def scalars(self, step: int, values: dict[str, float], epoch: int | None = None) -> None:
        """Per-iteration figures: raw to the log and to each sink (visdom smooths them)."""
        self.log.write(kind="iteration", step=step, epoch=epoch, **values)
        self.step = step
        for sink in self.sinks:
            sink.scalars("train", step, values)

    def metrics(self, step: int, values: dict[str, float], epoch: int | None = None) -> None:
        """Numbers from one evaluation (held-out scores, FID...): one curve per name."""
        self.log.write(kind="evaluation", step=step, epoch=epoch, **values)
        for sink in self.sinks:
            sink.scalars("evaluation", step, values)

    def faces(self, title: str, grid: np.ndarray, filename: str, epoch: int) -> Path:
        """A face grid: samples/<filename> in the run folder, one image in each sink."""
        path = save_png(self.run_dir / "samples" / filename, grid)
        self.log.write(kind="image", title=title, epoch=epoch,
                       path=path.relative_to(self.run_dir).as_posix())
        for sink in self.sinks:
            sink.images(title, grid, self.step, epoch)
        return path

    def speech(self, title: str, clips: list[tuple[str, np.ndarray]], sample_rate: int) -> None:
        """Speech clips, (caption, float waveform): wav files, and players in each sink."""
        folder = self.run_dir / "samples" / "speech"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, (_, waveform) in enumerate(clips):
            paths.append(folder / f"{window_id(title)}_{index:02d}.wav")
            soundfile.write(str(paths[-1]), waveform, sample_rate, subtype="PCM_16")
        self.log.write(kind="speech", title=title, captions=[caption for caption, _ in clips],
                       paths=[p.relative_to(self.run_dir).as_posix() for p in paths])
        for sink in self.sinks:
            sink.audio(title, [(c, w, p) for (c, w), p in zip(clips, paths)], sample_rate,
                       self.step)

    def epoch_end(self, epoch: int, step: int, means: dict[str, float]) -> Path:
        """Epoch means to the log, the sinks flushed, and index.html rewritten."""
        self.log.write(kind="epoch", epoch=epoch, step=step, **means)
        for sink in self.sinks:
            sink.flush()
        return write_run_page(self.run_dir, self.panels)
