"""Training that survives: where a run stands, its random generators, stop signals, checkpoint
rotation and the non-finite loss guard. The trainer composes these; none of them trains."""
from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils import UserError, resolve_checkpoint


# ---------------------------------------------------------------- where a run stands

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


# ---------------------------------------------------------------- random generators

def rng_states() -> dict:
    """Every global generator a training step can touch, in a form weights_only can load."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {"python": list(random.getstate()[1]), "torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate((3, tuple(states["python"]), None))
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        else:
            print(f"note: the checkpoint holds {len(states['cuda'])} CUDA generator states for "
                  f"{torch.cuda.device_count()} devices; CUDA randomness will differ")


# ---------------------------------------------------------------- stop signals

class StoppedBySignal(Exception):
    """SIGINT or SIGTERM arrived; the run saved `checkpoint` and stopped."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint = signum, checkpoint


class StopSignals:
    """While active, SIGINT and SIGTERM only ask the run to stop at the next safe point (after
    a step, or after an epoch's end); a second one stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():   # handlers live there only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------- checkpoint files

_CHECKPOINT_NAME = re.compile(r"checkpoint_epoch(\d+)(?:_step(\d+))?\.pt")


def checkpoint_name(epochs_done: int, step: int, mid_epoch: bool) -> str:
    """`checkpoint_epoch0003.pt` at the end of epoch 3; `checkpoint_epoch0004_step00000123.pt`
    after step 123, inside epoch 4."""
    if mid_epoch:
        return f"checkpoint_epoch{epochs_done + 1:04d}_step{step:08d}.pt"
    return f"checkpoint_epoch{epochs_done:04d}.pt"


def _age(path: Path) -> tuple:
    """Sort key, oldest first: inside epoch E (by step) comes before the end of epoch E."""
    epoch, step = _CHECKPOINT_NAME.fullmatch(path.name).groups()
    return (int(epoch), 0, int(step)) if step else (int(epoch), 1, 0)


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (0: keep all); never the one latest.pt is."""
    if keep <= 0:
        return []
    found = sorted((p for p in run_dir.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name)), key=_age)
    latest = run_dir / "latest.pt"
    removed = []
    for path in found[:-keep]:
        if latest.exists() and path.samefile(latest):
            continue
        path.unlink()
        removed.append(path)
    return removed


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Half-written checkpoints left by a run killed mid-write (they were never renamed in)."""
    partials = sorted([*run_dir.glob(".checkpoint_*.pt.partial"),
                       *run_dir.glob(".latest.pt.partial")])
    for path in partials:
        path.unlink()
    return partials


def trim_log(path: Path, step: int, epochs_done: int) -> int:
    """Drop the log lines a resumed run will write again: those after its checkpoint (a later
    step, or the end of an epoch the checkpoint was taken inside of)."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not _written_after(line, step, epochs_done)]
    if len(kept) != len(lines):
        partial = path.with_name(path.name + ".partial")
        partial.write_text("".join(kept))
        os.replace(partial, path)
    return len(lines) - len(kept)


EPOCH_END_KINDS = ("evaluation", "image", "epoch")     # log records written after an epoch


def _written_after(line: str, step: int, epochs_done: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return True                # a line cut short by a kill
    if not isinstance(record, dict):
        return False
    if _number(record.get("step")) > step:
        return True
    return record.get("kind") in EPOCH_END_KINDS and _number(record.get("epoch")) > epochs_done


def _number(value) -> float:
    return value if isinstance(value, (int, float)) else 0


# ---------------------------------------------------------------- resuming

NOT_RESUMED = ("resume", "inference", "pre_trained_gen", "pre_trained_disc", "audio")


def resume_checkpoint_path(resume: str, run_dir: Path) -> Path:
    """`latest` means this run folder's latest.pt; anything else is a checkpoint or run folder."""
    if resume == "latest":
        if not (run_dir / "latest.pt").is_file():
            raise UserError(f"--resume latest: {run_dir} holds no checkpoint yet; check "
                            "--save_path, or start the run without --resume")
        return run_dir / "latest.pt"
    return resolve_checkpoint(resume)


def merge_resumed_options(options, saved: dict, given: set[str]):
    """The checkpoint's options, except those given on this command line (which win, with a
    note where they change what the checkpoint's run did)."""
    for name, value in saved.items():
        if name in NOT_RESUMED or not hasattr(options, name):
            continue
        if name not in given:
            setattr(options, name, value)
        elif getattr(options, name) != value:
            print(f"note: resuming with --{name} {getattr(options, name)} "
                  f"(the checkpoint's run used {value})")
    return options


def check_resumable(checkpoint: dict, source) -> dict:
    if "resume_state" not in checkpoint:
        raise UserError(f"{source}: this checkpoint holds weights but no resume state (written "
                        "by an older version); start a new run from it with --pre_trained_gen "
                        "and --pre_trained_disc")
    return checkpoint["resume_state"]


# ---------------------------------------------------------------- non-finite losses

class NonFiniteLoss(Exception):
    """A NaN or infinite loss; the step it belongs to was not applied. `losses`: the figures."""

    def __init__(self, losses: dict[str, float]):
        super().__init__(describe_losses(losses))
        self.losses = losses


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


def describe_losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if not math.isfinite(v)) or "?"
