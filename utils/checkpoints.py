"""Checkpoints: written durably and read back, found, loaded safely, named and pruned."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import torch

from utils.errors import UserError
from utils.files import partial_path, sync_folder, write_durably

CHECKPOINT_FORMAT = 2         # 2 added resume_state (trainer.Trainer.resume_state); 1 still loads
READABLE_CHECKPOINT_FORMATS = (1, 2)


def save_checkpoint(run_dir, payload: dict, name: str) -> Path:
    """Write `name` durably (read back before it is renamed in), then point `latest.pt` at
    it. A crash, a kill or a full disk mid-write leaves the previous checkpoint and
    latest.pt as they were."""
    run_dir = Path(run_dir)
    target = save_checkpoint_file(run_dir / name, payload)
    try:
        _point_latest_at(target)
    except OSError as error:
        raise UserError(_not_written(target, error)) from None
    return target


def save_checkpoint_file(target, payload: dict) -> Path:
    """One checkpoint (a numbered one, or best.pt) written durably and read back; a failed
    write stops the run in one line that says latest.pt is intact."""
    target = Path(target)
    versioned = {"format_version": CHECKPOINT_FORMAT, **payload}
    try:
        write_durably(target, lambda f: torch.save(versioned, f), check=_readable)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise UserError(_not_written(target, error)) from None
    return target


def _readable(path: Path) -> None:
    torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _not_written(target: Path, error: Exception) -> str:
    # torch.save turns a failed write() into a RuntimeError; the OSError is its context.
    failed_write = error if isinstance(error, OSError) else error.__context__
    reason = (failed_write.strerror if isinstance(failed_write, OSError)
              else str(error).splitlines()[0][:100])
    return (f"could not write the checkpoint {target} ({reason}); the previous checkpoint "
            f"{target.parent / 'latest.pt'} is intact; make room (or fix the folder), then "
            "continue with --resume latest")


def _point_latest_at(target: Path) -> None:
    latest = target.parent / "latest.pt"
    latest_partial = partial_path(latest)
    try:
        os.link(target, latest_partial)
    except OSError:                  # a file system without hard links: copy
        shutil.copyfile(target, latest_partial)
    os.replace(latest_partial, latest)
    sync_folder(target.parent)


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or a run folder meaning its latest.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint; pass a .pt file or a run folder "
                        "under checkpoints/")
    return path


def resume_checkpoint_path(resume: str, run_dir: Path) -> Path:
    """`latest` means this run folder's latest.pt; anything else is a checkpoint or run folder."""
    if resume == "latest":
        if not (run_dir / "latest.pt").is_file():
            raise UserError(f"--resume latest: {run_dir} holds no checkpoint yet; check "
                            "--save_path, or start the run without --resume")
        return run_dir / "latest.pt"
    return resolve_checkpoint(resume)


def load_checkpoint(path) -> dict:
    """Load a checkpoint safely (weights_only: tensors and plain data, never code)."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):
            raise UserError(f"{path}: not a readable checkpoint (its contents are not a "
                            "checkpoint); it may be truncated or another kind of file") from None
        refused = next((line for line in str(error).splitlines() if "GLOBAL" in line), "")
        raise UserError(f"{path}: refused to load: it holds a pickled object that could run code "
                        f"({refused.strip()[:120]}); only load checkpoints this program "
                        "wrote") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise UserError(f"{path}: not a readable checkpoint ({str(error).splitlines()[0][:120]}); "
                        "it may be truncated or not a checkpoint at all") from None
    if not isinstance(checkpoint, dict) or "model_args" not in checkpoint:
        raise UserError(f"{path}: not a checkpoint written by this program (no model_args)")
    if checkpoint.get("format_version") not in READABLE_CHECKPOINT_FORMATS:
        raise UserError(f"{path}: checkpoint format {checkpoint.get('format_version')}, "
                        f"this program reads formats {READABLE_CHECKPOINT_FORMATS}")
    return checkpoint


def check_resumable(checkpoint: dict, source) -> dict:
    if "resume_state" not in checkpoint:
        raise UserError(f"{source}: this checkpoint holds weights but no resume state (written "
                        "by an older version); start a new run from it with --pre_trained_gen "
                        "and --pre_trained_disc")
    return checkpoint["resume_state"]


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
