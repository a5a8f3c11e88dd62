"""Where a run stands inside its epoch, and the guards against non-finite losses and
weights; the Trainer composes them, none trains."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from models.gan_step import describe_losses
from utils import UserError



@dataclass
class EpochProgress:
    """How far into the current epoch a run is, and the running sums its log line needs."""
    pairs_done: int = 0
    batches: int = 0             # batches whose steps were applied
    skipped: int = 0             # batches skipped for a non-finite loss
    totals: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)   # per figure: with --d_iters > 1 G's are rarer

    def add(self, batch_size: int, losses: dict[str, float] | None) -> None:
        self.pairs_done += batch_size
        if losses is None:
            self.skipped += 1
            return
        self.batches += 1
        for name, value in losses.items():
            self.totals[name] = self.totals.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.counts.get(k, self.batches), 1) for k, v in self.totals.items()}

    def state(self) -> dict:
        return asdict(self)


class TrainingDiverged(UserError):
    """Too many non-finite losses in a row: the run stopped, keeping its last good checkpoint."""


class NonFiniteGuard:
    """Counts batches skipped for a NaN/inf loss; `limit` in a row stops the run."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def passed(self) -> None:
        self.in_a_row = 0

    def failed(self, step: int, losses: dict[str, float], last_checkpoint: Path | None) -> None:
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            kept = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                    else "no checkpoint was written before it")
            raise TrainingDiverged(
                f"{self.in_a_row} steps in a row had a non-finite loss (step {step}: "
                f"{describe_losses(losses)}); stopped, {kept}; lower --lr_D / --lr_G "
                "or check the data, then --resume from it")


def check_place_in_epoch(pairs_done: int, processes: int, checkpoint: dict, source) -> None:
    """Each process resumes at pairs_done / N of its share: N must divide it."""
    if pairs_done % processes:
        raise UserError(f"{source}: it stopped {pairs_done} pairs into an epoch, "
                        f"which {processes} processes cannot share out evenly; resume it "
                        f"with {checkpoint.get('world_size', 1)} processes, or from a "
                        "checkpoint at an epoch's end")


def networks_finite(model: torch.nn.Module) -> bool:
    """Whether every weight and statistic is finite. A 2-norm over all of them is fast (8 ms
    for 18 M values, against 250 ms for isfinite) but overflows for absurd finite weights,
    so only its "no" is checked exactly."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if torch.nn.utils.get_total_norm(tensors, 2.0).isfinite():
        return True
    return all(t.isfinite().all() for t in tensors)
