"""--log_to wandb: a W&B run in the run folder, offline unless you are logged in."""
from __future__ import annotations

import netrc
import os
import urllib.parse
from pathlib import Path

import numpy as np

from utils.tracking.figures import window_id
from utils.tracking.protocol import SteppedSink


class WandbSink(SteppedSink):
    """A W&B run in <run folder>/wandb/, offline unless you are logged in (`wandb login`
    or WANDB_API_KEY; WANDB_MODE decides when set). Its id is kept in <run folder>/
    wandb_run_id, so --resume continues the same W&B run (`wandb sync` puts an offline
    resume's folders together). W&B's own exit hook finishes the run."""
    package = "wandb"
    summary = "a W&B run in the run folder (offline unless logged in)"

    def __init__(self, options, run_dir: Path, panels):
        super().__init__()
        import wandb                                  # ImportError without wandb
        id_file = run_dir / "wandb_run_id"
        resumed = getattr(options, "resume", None) and id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else os.urandom(4).hex()
        id_file.write_text(run_id + "\n")
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "wav2pix",
                              name=options.save_path, id=run_id, resume="allow", mode=mode,
                              dir=str(run_dir), settings=wandb.Settings(console="off",
                                                                        silent=True))
        where = run_dir / "wandb"
        print(f"wandb: {mode} run {run_id} in {where}" + (
            f"; upload it with `wandb sync {where}/offline-run-*-{run_id}`"
            if mode == "offline" else f": {self.run.url}"))

    def options(self, options: dict) -> None:
        self.run.config.update(options, allow_val_change=True)   # a resume may change some

    def scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        self.at(step, lambda step: self.run.log(
            {f"{group}/{name}": value for name, value in values.items()}, step=step))

    def images(self, title: str, grid: np.ndarray, step: int | None, epoch: int) -> None:
        image = self.wandb.Image(grid, caption=f"epoch {epoch}")
        self.at(step, lambda step: self.run.log({f"faces/{window_id(title)}": image}, step=step))

    def audio(self, title: str, clips: list, sample_rate: int, step: int | None) -> None:
        players = [self.wandb.Audio(waveform, sample_rate=sample_rate, caption=caption)
                   for caption, waveform, _ in clips]
        self.at(step, lambda step: self.run.log({f"speech/{window_id(title)}": players},
                                                step=step))

    def flush(self) -> None:
        """W&B streams each record to its run folder as it is logged."""


def wandb_logged_in() -> bool:
    """An API key in WANDB_API_KEY or in the netrc file `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
