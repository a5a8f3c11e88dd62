"""Shared helpers at the end of the chain: errors, devices, seeds, images, checkpoints, logs."""
from __future__ import annotations

import json
import os
import pickle
import random
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CHECKPOINT_FORMAT = 1


class UserError(Exception):
    """Something the user can fix (a path, an option, a file); printed as one line, exit 2."""


# ---------------------------------------------------------------- device and seeds

def choose_device(name: str = "auto") -> torch.device:
    """Pick the device once: CUDA when present (or asked for), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; "
                        "use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a generator for the DataLoader's order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- images

def to_uint8_images(faces: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> uint8 (N, S, S, 3)."""
    pixels = ((faces.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def face_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Stack image rows, each (N, 3, S, S) with the same N, into one uint8 grid (H, W, 3)."""
    images = [to_uint8_images(row) for row in rows]
    n, size = images[0].shape[0], images[0].shape[1]
    grid = np.full((len(rows) * (size + pad) + pad, n * (size + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            grid[y:y + size, x:x + size] = image
    return grid


def save_png(path, pixels: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


# ---------------------------------------------------------------- run folders and logs

def prepare_output_dir(path) -> Path:
    """Create an output folder, or say in one line why it cannot be used."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose another --save_path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the output folder {path} ({error.strerror}); "
                        "choose another --save_path") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"the output folder {path} is read-only; choose another --save_path")
    return path


class JsonLog:
    """Appends one JSON object per line: every logged figure of a run, readable without a server."""

    def __init__(self, path):
        self.path = Path(path)

    def write(self, **record) -> None:
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def write_json(path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(run_dir, payload: dict, name: str) -> Path:
    """Write `name` atomically, then point `latest.pt` at it.

    The file is written under a temporary name and renamed into place, and `latest.pt`
    moves only once the new file is complete, so a crash mid-write keeps the last one.
    """
    run_dir = Path(run_dir)
    target = save_checkpoint_file(run_dir / name, payload)
    latest_partial = run_dir / ".latest.pt.partial"
    latest_partial.unlink(missing_ok=True)
    try:
        os.link(target, latest_partial)
    except OSError:
        latest_partial.write_bytes(target.read_bytes())
    os.replace(latest_partial, run_dir / "latest.pt")
    return target


def save_checkpoint_file(target, payload: dict) -> Path:
    """Write one checkpoint under a temporary name and rename it into place."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    torch.save({"format_version": CHECKPOINT_FORMAT, **payload}, partial)
    os.replace(partial, target)
    return target


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or a run folder meaning its latest.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint; pass a .pt file or a run folder "
                        "under checkpoints/")
    return path


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
    if checkpoint.get("format_version") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: checkpoint format {checkpoint.get('format_version')}, "
                        f"this program reads format {CHECKPOINT_FORMAT}")
    return checkpoint
