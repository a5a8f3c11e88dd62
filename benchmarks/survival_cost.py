"""What surviving costs on this machine: the non-finite guard per step, a checkpoint write
(and its parts: write + fsync, read-back, rename + latest.pt + folder fsync), and a resume.

    python benchmarks/survival_cost.py [--batch_size 16] [--audio_seconds 1.0] [--repeats 5]

Runs on the demo set (built on first use) with the real Trainer; every figure is the median
of `--repeats` runs, in a temporary folder.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runtime  # noqa: E402
import trainer  # noqa: E402
import utils  # noqa: E402
from utils.checkpoints import _point_latest_at  # noqa: E402
from data.demo import demo_dataset_path  # noqa: E402
from dashboard_cost import median_seconds  # noqa: E402  (this folder is on sys.path)


def quietly(action):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return action()


def write_and_sync(path: Path, payload: dict) -> None:
    """The first part of utils.write_durably: the file written and flushed to disk."""
    with open(path, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())


def checkpoint_parts(run: trainer.Trainer, repeats: int) -> dict[str, float]:
    """The three parts of utils.save_checkpoint, timed one by one."""
    payload = {"format_version": utils.CHECKPOINT_FORMAT, **run.checkpoint_payload()}
    partial, target = run.run_dir / ".bench.pt.partial", run.run_dir / "bench.pt"
    times = {"write + fsync": [], "read back (mmap, weights_only)": [],
             "rename, latest.pt, folder fsync": []}
    for _ in range(repeats):
        marks = [time.perf_counter()]
        write_and_sync(partial, payload)
        marks.append(time.perf_counter())
        torch.load(partial, map_location="cpu", weights_only=True, mmap=True)
        marks.append(time.perf_counter())
        os.replace(partial, target)
        _point_latest_at(target)
        utils.sync_folder(run.run_dir)
        marks.append(time.perf_counter())
        for name, start, end in zip(times, marks, marks[1:]):
            times[name].append(end - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--audio_seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dataset = demo_dataset_path()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        options = runtime.config_for([
            "--dataset", str(dataset), "--batch_size", str(args.batch_size), "--num_workers", "0",
            "--audio_seconds", str(args.audio_seconds), "--save_path", "bench"])
        device = torch.device("cpu")
        init = median_seconds(lambda: quietly(lambda: trainer.Trainer(options, device, dataset)),
                              args.repeats)
        run = quietly(lambda: trainer.Trainer(options, device, dataset))
        batch = next(iter(run.train_loader))
        step = median_seconds(lambda: run.train_batch(batch), args.repeats)
        snapshot = median_seconds(lambda: [b.detach().clone() for b in run.model.buffers()],
                                  args.repeats * 20)
        save = median_seconds(lambda: quietly(run.save), args.repeats)
        finite = median_seconds(lambda: trainer.networks_finite(run.model), args.repeats)
        size = (run.run_dir / "latest.pt").stat().st_size / 2**20
        parts = checkpoint_parts(run, args.repeats)
        checkpoint = utils.load_checkpoint(run.run_dir / "latest.pt")
        resumed = options.replace(resume=str(run.run_dir / "latest.pt"))
        resume = median_seconds(lambda: quietly(lambda: trainer.Trainer(
            resumed, device, dataset, resume=checkpoint)), args.repeats)
        load = median_seconds(lambda: utils.load_checkpoint(run.run_dir / "latest.pt"),
                              args.repeats)

    rows = [("train step (batch %d, %.1f s audio)" % (args.batch_size, args.audio_seconds), step),
            ("  of which the guard's buffer snapshot", snapshot),
            (f"Trainer.save, whole ({size:.0f} MiB)", save),
            ("  weights finite? (checked before a save)", finite),
            *[(f"  {name}", seconds) for name, seconds in parts.items()],
            ("load a checkpoint (weights_only)", load),
            ("build a fresh Trainer", init),
            ("build a Trainer resumed from a checkpoint", resume)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}\n")
    print(f"| {'what':<45} | {'seconds':>8} |\n| {'-' * 45} | {'-' * 7}: |")
    for name, seconds in rows:
        print(f"| {name:<45} | {seconds:8.4f} |")


if __name__ == "__main__":
    main()
