"""A run's folder and the files written whole into it: every one goes through a partial file
that is flushed, renamed into place and made durable, so a kill leaves the old file or the
new one."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from utils.errors import UserError


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
    write_atomically(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def trim_log(path: Path, step: int, epochs_done: int) -> int:
    """Drop the log lines a resumed run will write again: those after its checkpoint (a later
    step, or the end of an epoch the checkpoint was taken inside of)."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not _written_after(line, step, epochs_done)]
    if len(kept) != len(lines):
        write_atomically(path, "".join(kept).encode())
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


def partial_path(target: Path) -> Path:
    """Where `target` is written before it is renamed into place: one pattern for every file
    a run writes whole (`remove_partial_files` clears those a kill left behind)."""
    return target.with_name(f".{target.name}.{os.getpid()}.partial")


def write_durably(target, write, check=None) -> Path:
    """The one way a whole file is written: `write(file)` into a partial file, flushed to
    disk, `check(partial)` where given, renamed into place, and the rename made durable.
    Readers see the old file or the new one; on any failure the partial file is removed and
    the error raised."""
    target = Path(target)
    partial = partial_path(target)
    try:
        with open(partial, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(partial)
        os.replace(partial, target)
        sync_folder(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, lambda f: f.write(data))


def sync_folder(folder: Path) -> None:
    """Make the renames durable too (a power cut must not bring back the old names)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Half-written files (checkpoints, best.pt, latest.pt, log, pages) left by a run killed
    mid-write: they were never renamed in."""
    partials = sorted(run_dir.glob(".*.partial"))
    for path in partials:
        path.unlink()
    return partials
