"""Shared helpers at the end of the chain: errors, devices, seeds, processes, images,
checkpoints, logs."""
from __future__ import annotations

import argparse
import atexit
import base64
import datetime
import html
import json
import logging
import math
import netrc
import os
import pickle
import random
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile
import torch
import torch.distributed as dist
from PIL import Image

CHECKPOINT_FORMAT = 2         # 2 added resume_state (trainer.Trainer.resume_state); 1 still loads
READABLE_CHECKPOINT_FORMATS = (1, 2)


class UserError(Exception):
    """Something the user can fix (a path, an option, a file); printed as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose own errors (an unknown option, a value outside its choices, a number
    that is not one) are UserErrors like every other bad option: one line, exit 2, no usage
    dump. Subcommand parsers inherit it."""

    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)")


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


# ---------------------------------------------------------------- several processes (torchrun)
# torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address) in each
# process's environment; without them a run is one process and nothing here communicates.
# The trainer wraps the networks in DistributedDataParallel; these are the rest.

PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=1)   # the others wait while rank 0 evaluates


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the run's processes (rank 0 of 1 when alone), and
    the few collectives the training loop needs; each is a no-op in a single process."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")    # where collectives' tensors live (NCCL: GPU)

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, grids, checkpoints and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def main_first(self, make: Callable, *args):
        """Run `make`, which may write a cache file, on rank 0 first; then on the first
        process of every other machine (whose own disk may lack the cache); then on the rest."""
        turn = 0 if self.is_main else 1 if self.local_rank == 0 else 2
        result = None
        for current in range(3):
            if current == turn:
                result = make(*args)
            self.barrier()
        return result

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor summed over the processes (a NaN or inf anywhere stays non-finite)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().to(self.device, torch.float64, copy=True)
        dist.all_reduce(total)
        return total

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Figures averaged over the processes: each is a batch mean, so this is the mean
        over the global batch."""
        if not self.distributed or not values:
            return values
        total = self.sum(torch.tensor(list(values.values()), dtype=torch.float64))
        return dict(zip(values, (total / self.world_size).tolist()))

    def max(self, value: int) -> int:
        if not self.distributed:
            return value
        largest = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return int(largest.item())

    def gather(self, value) -> list:
        """Every process's `value` (picklable), in rank order."""
        if not self.distributed:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


SINGLE_PROCESS = Ranks()


def ranks_from_environment() -> Ranks:
    """torchrun's variables; a run started with plain python is one process."""
    try:
        return Ranks(rank=int(os.environ.get("RANK", 0)),
                     world_size=int(os.environ.get("WORLD_SIZE", 1)),
                     local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start several "
                        "processes with torchrun, which sets them") from None


def process_device(ranks: Ranks, device: torch.device) -> torch.device:
    """One GPU per process: local rank i takes cuda:i on its machine."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise UserError(f"torchrun started more processes on this machine than it has GPUs "
                        f"({count}); use --nproc_per_node {count} or fewer")
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


@contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) for a training run; yields
    this process's Ranks, whose `device` is the one it trains on."""
    ranks = ranks_from_environment()
    if not ranks.distributed:
        yield replace(ranks, device=device)
        return
    device = process_device(ranks, device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=PROCESS_GROUP_TIMEOUT,
                            device_id=device if device.type == "cuda" else None)
    try:
        yield replace(ranks, device=device)
    finally:
        dist.destroy_process_group()


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


# ---------------------------------------------------------------- checkpoints

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
        _sync_folder(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, lambda f: f.write(data))


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
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make the renames durable too (a power cut must not bring back the old names)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)




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


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Half-written files (checkpoints, best.pt, latest.pt, log, pages) left by a run killed
    mid-write: they were never renamed in."""
    partials = sorted(run_dir.glob(".*.partial"))
    for path in partials:
        path.unlink()
    return partials


# ================================================================ dashboard and run folder
# Issue 5. One Visualizer per run, created by the Trainer: it writes every figure to the run
# folder (log.jsonl, PNG grids, wav clips, a static index.html) and, when a server answers,
# to visdom. Then the offline set-up of visdom's own page.

PLOT_SECONDS = 2.0          # at most one visdom update per panel this often (plus each epoch end)
SMOOTHING = 0.9             # weight of the exponential moving average of per-iteration curves
VISDOM_TIMEOUT_SECONDS = 10
# Per-iteration figures grouped into panels: (title, figure names, logarithmic y axis).
# Figures named in none of them get a panel of their own.
PANELS = (
    ("generator loss (weighted total)", ("g_loss",), False),
    ("generator loss terms", ("g_adv", "g_l1", "g_fm", "g_softmax", "g_gdl"), True),
    ("discriminator loss", ("d_loss",), False),
    ("D mean scores (targets 0.9 / 0)", ("d_real", "d_fake", "d_wrong"), False),
    ("speaker accuracy (train batches)", ("speaker_acc",), False),
    ("learning rates", ("lr_G", "lr_D"), False),
)


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


def panels_for(names) -> list[tuple[str, tuple[str, ...], bool]]:
    """The PANELS that hold any of `names`, then one panel for each name none of them holds."""
    names = list(names)
    panels = [(title, tuple(n for n in members if n in names), log)
              for title, members, log in PANELS if any(n in names for n in members)]
    grouped = {n for _, members, _ in PANELS for n in members}
    return panels + [(name, (name,), False) for name in names if name not in grouped]


def window_id(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


class Visualizer:
    """What a run shows, behind a few calls (as CycleGAN's util/visualizer.py).

    Everything goes to `checkpoints/<save_path>/`: options.json, log.jsonl (one JSON line
    per figure: `kind` is start, iteration, evaluation, epoch, image or speech), the PNG
    grids, the wav clips and index.html; log.jsonl is the one complete record. The same
    figures go to each live output of --log_to (`sinks`: visdom, TensorBoard, W&B).
    """

    def __init__(self, run_dir, options):
        self.run_dir = Path(run_dir)
        write_json(self.run_dir / "options.json", vars(options))
        self.log = JsonLog(self.run_dir / "log.jsonl")
        # A resumed run continues the log (trim_log drops what it will write again).
        resumed = getattr(options, "resume", None)
        self.log.write(kind="resume" if resumed else "start", save_path=options.save_path)
        self.step: int | None = None        # None until the first training step is logged
        self.sinks = live_sinks(options, self.run_dir)
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
        return write_run_page(self.run_dir)


# ---------------------------------------------------------------- live outputs (--log_to)
# Each sink has the same five calls: options(dict), scalars(group, step, values),
# images(title, grid, step, epoch), audio(title, [(caption, waveform, wav path)], rate, step)
# and flush() at each epoch's end. `step` is None before the first training step.

LOG_TO = ("visdom", "tensorboard", "wandb")
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def live_sinks(options, run_dir: Path) -> list:
    """The --log_to outputs that open; one that cannot says so in one line and is left out."""
    names = [name for name in options.log_to.split(",")
             if not (name == "visdom" and options.no_visdom)]
    sinks = []
    for name in names:
        try:
            sinks.append(SINKS[name](options, run_dir))
        except ImportError:
            print(f"note: --log_to {name} needs the {TRACKER_PACKAGES[name]} package (its "
                  f"pinned line is in requirements.txt); training goes on without it")
        except Exception as error:      # noqa: BLE001 - a tracker must never stop training
            print(f"note: --log_to {name} did not start ({str(error).splitlines()[0][:120]}); "
                  "training goes on without it")
    return sinks


class VisdomSink:
    """visdom's client behind one guard. If the server is absent or stops answering, this
    says so in one line and the run goes on without it (the client itself would print a
    traceback for every call and return False). Per-iteration figures are smoothed and
    sent at most every PLOT_SECONDS, grouped into the PANELS."""

    def __init__(self, options, run_dir: Path):
        self.address = f"{options.visdom_server}:{options.visdom_port}"
        self.env, self.created, self.client = options.vis_screen, set(), None
        self.fallback = f"training goes on; {run_dir / 'index.html'} shows the run"
        self.smoothed: dict[str, SmoothedCurve] = {}
        self.step, self.plotted_step, self.last_plot = 0, None, -math.inf
        try:
            self.client = quiet_visdom_client(options.visdom_server, options.visdom_port,
                                              self.env)
        except OSError:
            print(f"note: no visdom server answers at {self.address} (start one with "
                  f"`python runtime.py --serve_dashboard --visdom_port {options.visdom_port}`"
                  f" or pass --no_visdom); {self.fallback}")
        else:
            print(f"dashboard: {self.address}/env/{self.env}")

    def options(self, options: dict) -> None:
        """visdom shows no options; options.json and index.html hold them."""

    def scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        if group == "evaluation":        # markers: a curve of one point is a dot, not nothing
            for name, value in values.items():
                self.line(f"evaluation: {name}", step, {name: value}, markers=True)
            return
        for name, value in values.items():
            self.smoothed.setdefault(name, SmoothedCurve()).update(value)
        self.step = step
        if time.monotonic() - self.last_plot >= PLOT_SECONDS:
            self._plot_smoothed()

    def _plot_smoothed(self) -> None:
        self.last_plot = time.monotonic()
        if self.smoothed and self.plotted_step != self.step:
            self.plotted_step = self.step
            for title, names, log_scale in panels_for(self.smoothed):
                self.line(title, self.step, {n: self.smoothed[n].value for n in names},
                          log_scale)

    def images(self, title: str, grid: np.ndarray, step: int | None, epoch: int) -> None:
        self._send(lambda client: client.image(
            grid.transpose(2, 0, 1), win=window_id(title), env=self.env,
            opts={"title": title, "caption": f"epoch {epoch}"}))

    def audio(self, title: str, clips: list, sample_rate: int, step: int | None) -> None:
        """One window of players; visdom's own `audio` takes one clip and leaves temp files."""
        players = audio_players([caption for caption, _, _ in clips], [
            f"data:audio/wav;base64,{base64.b64encode(path.read_bytes()).decode()}"
            for _, _, path in clips])
        self._send(lambda client: client.text(players, win=window_id(title), env=self.env,
                                              opts={"title": title}))

    def flush(self) -> None:
        """The latest curves, and the environment kept on the server's disk (survives a
        restart of the server)."""
        self._plot_smoothed()
        self._send(lambda client: client.save([self.env]))

    def _send(self, call) -> None:
        if self.client is None:
            return
        try:
            call(self.client)
        except OSError as error:
            self.client = None
            print(f"note: the visdom server at {self.address} stopped answering "
                  f"({str(error).splitlines()[0][:80]}); {self.fallback}")

    def line(self, title: str, step: int, values: dict[str, float], log_scale=False,
             markers=False) -> None:
        win = window_id(title)
        opts = {"title": title, "legend": list(values), "xlabel": "step",
                "ytype": "log" if log_scale else "linear", "markers": markers}

        def send(client):
            client.line(Y=np.array([list(values.values())], dtype=float),
                        X=np.full((1, len(values)), step), win=win, env=self.env,
                        update="append" if win in self.created else None, opts=opts)
            self.created.add(win)
        self._send(send)


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


class TensorBoardSink(SteppedSink):
    """Event files in <run folder>/tensorboard/, raw values every step (TensorBoard smooths
    them itself). A resumed run writes into the same folder, so it is the same TensorBoard
    run; its writer opens with purge_step at its first step, which makes TensorBoard drop
    what an interrupted process logged after the checkpoint (this process logs it again)."""

    def __init__(self, options, run_dir: Path):
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


class WandbSink(SteppedSink):
    """A W&B run in <run folder>/wandb/, offline unless you are logged in (`wandb login`
    or WANDB_API_KEY; WANDB_MODE decides when set). Its id is kept in <run folder>/
    wandb_run_id, so --resume continues the same W&B run (`wandb sync` puts an offline
    resume's folders together). W&B's own exit hook finishes the run."""

    def __init__(self, options, run_dir: Path):
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


SINKS = {"visdom": VisdomSink, "tensorboard": TensorBoardSink, "wandb": WandbSink}


def quiet_visdom_client(server: str, port: int, env: str):
    """A visdom client that raises OSError instead of printing, and never waits forever."""
    import visdom
    logging.getLogger("visdom").setLevel(logging.ERROR)   # its notes on sockets we do not use

    class TimedVisdom(visdom.Visdom):
        def _handle_post(self, url, data=None):
            return self.session.post(url, data=data, timeout=VISDOM_TIMEOUT_SECONDS).text

    return TimedVisdom(server=server, port=port, env=env, raise_exceptions=True,
                       use_incoming_socket=False)


# ---------------------------------------------------------------- index.html: a run without a server

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
CHART_POINTS = 1500          # polyline points per curve; longer runs are thinned for the page


def current_run_records(log_path: Path) -> list[dict]:
    """The log's records since its last `start` (a reused --save_path appends a new run)."""
    records = []
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            record = json.loads(line)
            records = [] if record.get("kind") == "start" else records
            records.append(record)
    return records


def write_run_page(run_dir) -> Path:
    """index.html: curves as inline SVG, the latest grids, the speech and the options; it
    needs no server and no network, so a run can be read later from its folder alone."""
    run_dir = Path(run_dir)
    records = current_run_records(run_dir / "log.jsonl")
    options_path = run_dir / "options.json"
    options = json.loads(options_path.read_text()) if options_path.is_file() else {}
    sections = [_training_charts(records), _evaluation_charts(records), _image_section(records),
                _speech_section(records), _options_section(options)]
    title = html.escape(f"run {run_dir.name}")
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{PAGE_STYLE}</style></head>\n<body><h1>{title}</h1>\n<p>{_progress(records)}"
            f"</p>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    write_atomically(run_dir / "index.html", page.encode())
    return run_dir / "index.html"


PAGE_STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}"
              "section{display:flex;flex-wrap:wrap;gap:1em;margin-bottom:1.5em}"
              "figure{margin:0}figcaption{font-size:13px;margin:.3em 0}"
              "img{image-rendering:pixelated;max-width:100%}"
              "td{padding:0 1em 0 0;font-size:13px}svg{background:#fff;border:1px solid #ddd}")


def _progress(records: list[dict]) -> str:
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        return "no epoch finished yet"
    last = epochs[-1]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.get("time", 0)))
    return f"epoch {last['epoch']}, step {last['step']}, written {when}"


def _series(records: list[dict], kind: str) -> dict[str, list[tuple[float, float]]]:
    """(step, value) of every finite number logged under `kind`, by figure name."""
    series: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        if record.get("kind") != kind:
            continue
        for name, value in record.items():
            if name in ("kind", "step", "epoch", "time") or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(name, []).append((record["step"], value))
    return series


def _training_charts(records: list[dict]) -> str:
    series = _series(records, "iteration")
    charts = []
    for title, names, log_scale in panels_for(series):
        lines = {}
        for name in names:
            smoothed = SmoothedCurve()
            lines[name] = (series[name], [(x, smoothed.update(y)) for x, y in series[name]])
        charts.append(svg_chart(title, lines, log_scale))
    return _section("Training, per iteration", charts,
                    "<p>bold: smoothed (moving average), faint: raw</p>")


def _evaluation_charts(records: list[dict]) -> str:
    series = _series(records, "evaluation")
    charts = [svg_chart(f"evaluation: {name}", {name: ([], points)}, False, dots=True)
              for name, points in series.items()]
    return _section("Evaluations", charts)


def _image_section(records: list[dict]) -> str:
    by_title: dict[str, list[dict]] = {}
    for record in records:
        if record.get("kind") == "image":
            by_title.setdefault(record["title"], []).append(record)
    figures = []
    for title, images in by_title.items():
        latest = images[-1]
        earlier = "".join(_figure(f"epoch {r['epoch']}", _image(r["path"], lazy=True))
                          for r in images[-2::-1])
        folded = f"<details><summary>earlier epochs</summary>{earlier}</details>" if earlier else ""
        figures.append(_figure(f"{title}, epoch {latest['epoch']}",
                               _image(latest["path"]) + folded))
    return _section("Faces", figures)


def _speech_section(records: list[dict]) -> str:
    latest = {r["title"]: r for r in records if r.get("kind") == "speech"}
    return _section("Speech", [_figure(title, audio_players(r["captions"], r["paths"]))
                               for title, r in latest.items()])


def _options_section(options: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in sorted(options.items()))
    return f"<h2>Options</h2><table>{rows}</table>" if rows else ""


def _section(heading: str, parts: list[str], note: str = "") -> str:
    parts = [part for part in parts if part]
    return f"<h2>{heading}</h2>{note}<section>{''.join(parts)}</section>" if parts else ""


def _figure(caption: str, content: str) -> str:
    return f"<figure><figcaption>{html.escape(caption)}</figcaption>{content}</figure>"


def _image(source: str, lazy: bool = False) -> str:
    loading = ' loading="lazy"' if lazy else ""
    return f"<img{loading} src=\"{html.escape(source)}\">"


def audio_players(captions: list[str], sources: list[str]) -> str:
    """One captioned player per clip; a source is a file path or a data: URI."""
    return "".join(f"<div>{html.escape(caption)}<br><audio controls preload=\"none\" "
                   f"src=\"{html.escape(source)}\"></audio></div>"
                   for caption, source in zip(captions, sources))


def svg_chart(title: str, lines: dict[str, tuple[list, list]], log_scale: bool,
              dots: bool = False, width: int = 460, height: int = 250) -> str:
    """An inline SVG line chart. `lines` maps a name to (faint raw points, bold points);
    long curves are thinned to about CHART_POINTS before anything is drawn."""
    lines = {name: (_thin(raw), _thin(bold)) for name, (raw, bold) in lines.items()}
    frame = ChartFrame([p for raw, bold in lines.values() for p in raw + bold], log_scale,
                       width, height)
    if frame.empty:
        return ""
    parts = [f"<text x=\"{frame.LEFT}\" y=\"14\" font-size=\"13\">{html.escape(title)}</text>",
             frame.axes()]
    for index, (name, (raw, bold)) in enumerate(lines.items()):
        color = PALETTE[index % len(PALETTE)]
        parts += [frame.polyline(raw, color, 1, 0.25), frame.polyline(bold, color, 1.8, 1),
                  frame.dots(bold, color) if dots else "",
                  f"<text x=\"{frame.LEFT + 8 + 100 * index}\" y=\"30\" font-size=\"11\" "
                  f"fill=\"{color}\">&#9644; {html.escape(name)}</text>"]
    return (f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
            f"class=\"chart\">" + "".join(parts) + "</svg>")


def _thin(curve: list) -> list:
    return curve[::max(1, len(curve) // CHART_POINTS)]


class ChartFrame:
    """Maps (step, value) points to the pixels of one chart, on a log10 axis when asked."""
    LEFT, RIGHT, TOP, BOTTOM = 58, 10, 40, 26

    def __init__(self, points, log_scale: bool, width: int, height: int):
        self.log_scale, self.width, self.height = log_scale, width, height
        scaled = [(x, self.scale(y)) for x, y in points]
        kept = [(x, y) for x, y in scaled if y is not None]
        self.empty = not kept
        if kept:
            self.x0, self.x1 = min(x for x, _ in kept), max(x for x, _ in kept)
            self.y0, self.y1 = min(y for _, y in kept), max(y for _, y in kept)
            self.x1 = max(self.x1, self.x0 + 1)
            if self.y1 - self.y0 <= 1e-12 * max(1.0, abs(self.y0)):   # flat: give it room
                margin = abs(self.y0) * 0.1 + 1e-9
                self.y0, self.y1 = self.y0 - margin, self.y1 + margin

    def scale(self, y: float) -> float | None:
        if not self.log_scale:
            return y
        return math.log10(y) if y > 0 else None

    def place(self, x: float, scaled_y: float) -> tuple[float, float]:
        across = (x - self.x0) / (self.x1 - self.x0)
        up = (scaled_y - self.y0) / (self.y1 - self.y0)
        return (self.LEFT + across * (self.width - self.LEFT - self.RIGHT),
                self.height - self.BOTTOM - up * (self.height - self.TOP - self.BOTTOM))

    def axes(self) -> str:
        """Five labelled grid lines up the value axis, five whole steps along the bottom."""
        parts = []
        magnitude = max(abs(self.y0), abs(self.y1)) / (self.y1 - self.y0)
        digits = 3 + min(6, max(0, math.floor(math.log10(magnitude)))) if magnitude > 0 else 3
        for i in range(5):
            y = self.y0 + (self.y1 - self.y0) * i / 4
            label = 10 ** y if self.log_scale else y
            _, py = self.place(self.x0, y)
            parts.append(f"<line x1=\"{self.LEFT}\" x2=\"{self.width - self.RIGHT}\" "
                         f"y1=\"{py:.1f}\" y2=\"{py:.1f}\" stroke=\"#eee\"/>"
                         f"<text x=\"{self.LEFT - 4}\" y=\"{py + 4:.1f}\" font-size=\"10\" "
                         f"text-anchor=\"end\">{label:.{3 if self.log_scale else digits}g}</text>")
        for x in sorted({round(self.x0 + (self.x1 - self.x0) * i / 4) for i in range(5)}):
            px, _ = self.place(x, self.y0)
            parts.append(f"<text x=\"{px:.1f}\" y=\"{self.height - 8}\" font-size=\"10\" "
                         f"text-anchor=\"middle\">{x}</text>")
        return "".join(parts)

    def _placed(self, curve) -> list[tuple[float, float]]:
        scaled = [(x, self.scale(y)) for x, y in curve]
        return [self.place(x, y) for x, y in scaled if y is not None]

    def polyline(self, curve, color: str, stroke: float, opacity: float) -> str:
        xy = " ".join(f"{px:.1f},{py:.1f}" for px, py in self._placed(curve))
        return (f"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{stroke}\" "
                f"stroke-opacity=\"{opacity}\" points=\"{xy}\"/>" if xy else "")

    def dots(self, curve, color: str) -> str:
        return "".join(f"<circle cx=\"{px:.1f}\" cy=\"{py:.1f}\" r=\"2.5\" fill=\"{color}\"/>"
                       for px, py in self._placed(curve))


# ---------------------------------------------------------------- visdom's page, offline

_BOOTSTRAP_FONTS = {f"dist/fonts/glyphicons-halflings-regular.{ext}":
                    f"fonts/glyphicons-halflings-regular.{ext}"
                    for ext in ("eot", "woff2", "woff", "ttf")}
_MATHJAX_FILES = ("MathJax.js", "config/Safe.js", "config/TeX-AMS-MML_HTMLorMML.js",
                  "extensions/Safe.js", "jax/output/SVG/jax.js", "jax/output/SVG/config.js",
                  "jax/output/SVG/fonts/TeX/fontdata.js",
                  "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js")
# The third-party files of visdom 0.2.4's page, which its server downloads from CDNs on
# first start (visdom/server/build.py) and cannot fetch offline. Each comes from an npm
# package: {package: {file in the package: file under visdom/static, as build.py names it}}.
DASHBOARD_ASSETS = {
    "jquery@3.1.1": {"dist/jquery.min.js": "js/jquery.min.js"},
    "bootstrap@3.3.7": {
        "dist/js/bootstrap.min.js": "js/bootstrap.min.js",
        "dist/css/bootstrap.min.css": "css/bootstrap.min.css", **_BOOTSTRAP_FONTS,
        # build.py keeps the URL's fragment in this file name
        "dist/fonts/glyphicons-halflings-regular.svg":
            "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"},
    "react@16.2.0": {"umd/react.production.min.js": "js/react-react.min.js"},
    "react-dom@16.2.0": {"umd/react-dom.production.min.js": "js/react-dom.min.js"},
    "react-modal@3.1.10": {"dist/react-modal.min.js": "js/react-modal.min.js"},
    "plotly.js-dist-min@2.11.1": {"plotly.min.js": "js/plotly-plotly.min.js"},
    "sjcl@1.0.7": {"sjcl.js": "js/sjcl.js"},
    "layout-bin-packer@1.4.0": {"dist/layout-bin-packer.js": "js/layout_bin_packer.js",
                                "dist/layout-bin-packer.js.map": "js/layout-bin-packer.js.map"},
    "d3@3.5.17": {"d3.min.js": "js/d3.v3.min.js"},
    "d3-selection-multi@1.0.1": {"build/d3-selection-multi.js": "js/d3-selection-multi.v1.js"},
    "save-svg-as-png@1.4.17": {"lib/saveSvgAsPng.js": "js/saveSvgAsPng.js"},
    "react-resizable@1.4.6": {"css/styles.css": "css/react-resizable-styles.css"},
    "react-grid-layout@0.16.3": {"css/styles.css": "css/react-grid-layout-styles.css"},
    "classnames@2.2.5": {"index.js": "fonts/classnames"},
    "mathjax@2.7.5": {name: f"js/mathjax/2.7.5/{name}" for name in _MATHJAX_FILES},
}


def visdom_static_dir() -> Path:
    import visdom
    return Path(visdom.__file__).parent / "static"


def missing_dashboard_assets(static: Path) -> list[str]:
    """Asset files absent from visdom's static folder; with `version.built` holding visdom's
    version and none absent, its server starts without a network call."""
    import visdom
    built = static / "version.built"
    missing = [target for files in DASHBOARD_ASSETS.values() for target in files.values()
               if not (static / target).is_file()]
    if not built.is_file() or built.read_text().strip() != visdom.__version__:
        missing.append("version.built")
    return missing


def install_dashboard_assets() -> bool:
    """Copy visdom's page assets from npm packages into its static folder if any is
    missing; return whether anything was installed."""
    import visdom
    static = visdom_static_dir()
    if not missing_dashboard_assets(static):
        return False
    if not os.access(static, os.W_OK):
        raise UserError(f"visdom's folder {static} is read-only; run this once as a user who "
                        "can write there (it adds visdom's JavaScript)")
    print(f"installing visdom's JavaScript and CSS from npm into {static} (once)")
    with tempfile.TemporaryDirectory() as folder:
        tarballs = npm_pack(list(DASHBOARD_ASSETS), folder)
        for spec, tarball in tarballs.items():
            with tarfile.open(Path(folder) / tarball) as archive:
                for inside, target in DASHBOARD_ASSETS[spec].items():
                    data = archive.extractfile(f"package/{inside}").read()
                    write_atomically(static / target, data)
    write_atomically(static / "version.built", visdom.__version__.encode())
    return True


def npm_pack(specs: list[str], folder: str) -> dict[str, str]:
    """Download npm packages as tarballs into `folder` (no node_modules, no scripts run);
    returns {"name@version": tarball file name}."""
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("visdom's page needs JavaScript from the npm registry but npm is not "
                        "installed; install Node.js and npm (Debian: apt-get install npm)")
    result = subprocess.run([npm, "pack", "--json", "--ignore-scripts", *specs], cwd=folder,
                            capture_output=True, text=True)
    if result.returncode != 0:
        reason = next((line for line in result.stderr.splitlines() if "ERR" in line),
                      result.stderr.strip()[:200])
        raise UserError(f"npm could not fetch visdom's JavaScript ({reason}); check that the "
                        "npm registry is reachable and try again")
    return {f"{package['name']}@{package['version']}": package["filename"]
            for package in json.loads(result.stdout)}




def serve_dashboard(port: int) -> None:
    """Install visdom's page assets if missing, then become a visdom server on 127.0.0.1."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"port {port} is taken (a visdom server may already run there: open "
                            f"http://localhost:{port}); choose another --visdom_port") from None
    install_dashboard_assets()
    print(f"visdom dashboard: open http://localhost:{port} (this machine only; from another "
          f"one, `ssh -L {port}:localhost:{port} <this machine>` first)", flush=True)
    command = [sys.executable, "-m", "visdom.server", "-port", str(port), "-bind_local"]
    os.execv(sys.executable, command)
