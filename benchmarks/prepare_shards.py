"""Sharded video preparation against one run: wall time and the same bytes.

    python benchmarks/prepare_shards.py [--clips 39] [--shards 2] [--src FOLDER]

The first `--clips` clips of the realvids-dev fixture in sorted order (or every video of
`--src`, laid out <speaker>/<video>) are prepared with data.prepare's own command line,
each in a fresh process (imports and models included), at the defaults:

- once by one run with `--workers 1`, pinned to one core;
- then as `--shards` shards started at the same moment, each pinned to a core of its own
  (`taskset`; where there is none, one thread each is all that holds them), followed by
  `assemble`.

Every process runs torch (OpenMP, MKL) on one thread. The table gives the wall time
of each mode, its ratio to the one run, and whether the assembled file's sha256 is the one
run's. Other jobs on the machine slow every mode, so the load average is printed beside it
(run it on a quiet machine: at least `--shards` idle cores). Target: 2 shards plus assemble
within 0.6x the one run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALVIDS = REPO.parent / "shared" / "fixtures" / "realvids-dev"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def linked_clips(src: Path, count: int | None, into: Path) -> int:
    """`into`/<speaker>/<clip>: links to the first `count` clips of `src` (all if None)."""
    clips = sorted(p for p in src.glob("*/*") if p.is_file() and p.suffix.lower() != ".md")
    for clip in clips[:count]:
        (into / clip.parent.name).mkdir(parents=True, exist_ok=True)
        (into / clip.parent.name / clip.name).symlink_to(clip.resolve())
    return len(clips[:count])


def command(core: int | None, *args) -> list:
    pinned = ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []
    return [*pinned, sys.executable, "-m", "data.prepare", *map(str, args)]


def run_at_once(commands: list) -> list[float]:
    """Wall seconds from starting every command together until each one ends."""
    environment = {**os.environ, **ONE_THREAD}
    start = time.perf_counter()
    processes = [subprocess.Popen(c, cwd=REPO, env=environment, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for c in commands]
    ended = [None] * len(processes)
    while None in ended:
        for index, process in enumerate(processes):
            if ended[index] is None and process.poll() is not None:
                ended[index] = time.perf_counter() - start
        time.sleep(0.02)
    for process, line in zip(processes, commands):
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(line)} failed ({process.returncode}); run it alone to see why")
    return ended


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=None, help="first N clips (default: all)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--src", type=Path, default=REALVIDS)
    parser.add_argument("--frames_per_second", type=float, default=2,
                        help="data.prepare's option, given to every run")
    parser.add_argument("--shard_by", default="duration", choices=("duration", "bytes"),
                        help="data.prepare's option, given to the shards")
    options = parser.parse_args()
    fps = ["--frames_per_second", options.frames_per_second]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        clips = linked_clips(options.src, options.clips, root / "v")
        load = os.getloadavg()[0]
        [one] = run_at_once([command(0, "videos", root / "v", root / "one.h5", "--workers", 1, *fps)])
        each = run_at_once([command(k % cores, "videos", root / "v", root / "sharded.h5",
                                    "--shard", f"{k + 1}/{options.shards}",
                                    "--shard_by", options.shard_by, *fps)
                            for k in range(options.shards)])
        [assemble] = run_at_once([command(0, "assemble", root / "v", root / "sharded.h5", *fps)])
        same = sha256(root / "one.h5") == sha256(root / "sharded.h5")
    n, shards = options.shards, max(each)
    print(f"{clips} clips of {options.src}, --frames_per_second {options.frames_per_second:g}, "
          f"--shard_by {options.shard_by}, {cores} cores, load average {load:.2f} at the start; "
          f"each shard's seconds: {', '.join(f'{s:.1f}' for s in each)}\n")
    print("| mode | processes | wall s | ratio to one | sha256 equal |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| one run, --workers 1 | 1 | {one:.1f} | 1.00 | |")
    print(f"| {n} shards at once | {n} | {shards:.1f} | {shards / one:.2f} | |")
    print(f"| assemble | 1 | {assemble:.1f} | {assemble / one:.2f} | |")
    print(f"| {n} shards + assemble | {n} | {shards + assemble:.1f} | "
          f"{(shards + assemble) / one:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
