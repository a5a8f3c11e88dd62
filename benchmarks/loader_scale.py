"""The training DataLoader on a pair file about twice the memory it may use, cold cache.

    python benchmarks/loader_scale.py --cgroup_parent GROUP [--limit_gb 2] [--small_gb 0.7]
        [--workers 0 2 8] [--seconds 20] [--read_blocks 16] [--block_rows 64] [--blocks 4]
        [--dir DIR] [--keep]

Needs root (cgroup v1 memory controller, /proc/sys/vm/drop_caches). The machine has more
memory than the disk can spare for a file twice its size, so each timing runs in a fresh
process inside a memory cgroup limited to `--limit_gb` (page cache is charged to it, the
DataLoader's workers inherit it) against a file of twice that, and a file of `--small_gb`
that fits. The files are random but valid pairs (64 px faces, 1 s windows, 44,288 bytes a
pair, 100 speakers in runs of consecutive rows as data.prepare writes them) streamed through
data.schema.PairWriter and checked by validate_pair_file; they are deleted at the end unless
`--keep`.

Caches are dropped before each cold timing, and coldness is checked: the first read of
32 MB of the file against a re-read. Each timing iterates the loader trainer.py builds
(SpeechFaceDataset(train=True, in_memory as the dataset decides), EpochOrder, batch 64,
drop_last, seed_worker) for `--seconds` after its first batch; pairs/s over that time.
Peak memory is the largest sum of PSS (proportional set size: a page shared by the forked
workers counted once, split between them) of the process and its workers, sampled every
0.5 s, which page cache does not enter.

"read_blocks" is the same loader with the trainer's `--read_blocks` (16: a batch is 4 runs
of 16 consecutive rows, one HDF5 read per run and column, wrong faces from the batch).
"buffers" reads `--block_rows` consecutive rows per HDF5 read: each loader item is
`--blocks` blocks at random places of the epoch's block order, shuffled together and cut
into batches, wrong faces drawn among the item's other speakers (see BlockReads). Workers
send the stored int16 crops and uint8 faces (44 KB a pair, not 160 KB of float32); the
main process prepares them as data.device_batches does on a GPU, here on the CPU.
A last row shows what the dataset's former rule (any split under 2 GiB read into memory)
does under a limit below the small file's size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.schema import PairWriter, validate_pair_file  # noqa: E402

WINDOW, FACE, SPEAKERS, BATCH = 16000, 64, 100, 64
PAIR_BYTES = WINDOW * 2 + FACE * FACE * 3
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
GB = 1e9


# ---------------------------------------------------------------- the files

def write_pairs(path: Path, gigabytes: float, seed: int = 0, chunk: int = 1024) -> int:
    """Random valid pairs through the project's writer; speakers in runs of consecutive rows."""
    rows = int(gigabytes * GB / PAIR_BYTES)
    rng = np.random.default_rng(seed)
    per_speaker = -(-rows // SPEAKERS)
    with PairWriter(path, [f"speaker{i:03d}" for i in range(SPEAKERS)], WINDOW, FACE) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            speech = rng.integers(-8000, 8000, (n, WINDOW), dtype=np.int16)
            faces = rng.integers(0, 256, (n, FACE, FACE, 3), dtype=np.uint8)
            writer.append("train", speech, faces, (start + np.arange(n)) // per_speaker)
    validate_pair_file(path)
    return rows


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_speed(path: Path, megabytes: int = 32) -> float:
    """MB/s of one plain read of `megabytes` from the middle of the file."""
    with open(path, "rb", buffering=0) as f:
        f.seek(path.stat().st_size // 2)
        start = time.perf_counter()
        f.read(megabytes << 20)
        return megabytes * 1.048576 / (time.perf_counter() - start)


def resident_mb(path: Path) -> float:
    """MB of the file in the page cache (util-linux fincore), -1 where it cannot say."""
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True)
    return int(done.stdout.split()[0]) / 1e6 if done.returncode == 0 else -1.0


def cold_check(path: Path) -> tuple[float, float, float]:
    """(first read MB/s after dropping caches, re-read MB/s, MB of the file still cached
    after dropping them again)."""
    drop_caches()
    first, again = read_speed(path), read_speed(path)
    drop_caches()
    return first, again, resident_mb(path)


# ---------------------------------------------------------------- one timing, in a child

def join_cgroup(name: str) -> None:
    (CGROUP_ROOT / name / "cgroup.procs").write_text(f"{os.getpid()}\n")


def pss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class PeakPss(threading.Thread):
    """The largest summed PSS of this process and `pids()`, sampled every `every` s."""

    def __init__(self, pids, every: float = 0.5):
        super().__init__(daemon=True)
        self.pids, self.every, self.peak, self.done = pids, every, 0.0, threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            self.peak = max(self.peak, pss_mb([os.getpid(), *self.pids()]))


def training_loader(path: Path, workers: int, rule: str, block_rows: int = 0):
    import torch
    from torch.utils.data import DataLoader

    from data import dataset as dataset_module
    from data.dataset import SpeechFaceDataset
    from data.order import seed_worker, training_order
    info = validate_pair_file(path)
    in_memory = None
    if rule == "former":       # the rule before available memory counted: any split <= 2 GiB
        in_memory = info.splits["train"].num_pairs * PAIR_BYTES <= dataset_module.IN_MEMORY_LIMIT_BYTES
    dataset = SpeechFaceDataset(info, "train", WINDOW, FACE, train=True, in_memory=in_memory)
    order = training_order(len(dataset), BATCH, seed=0, block_rows=block_rows)
    dataset.block_rows = block_rows
    dataset.wrong_faces = False     # as trainer.py reads for the default --wrong_faces batch
    order.start(0, 0)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=order, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0), worker_init_fn=seed_worker)
    return loader, dataset._arrays is not None


def block_loader(path: Path, workers: int, block_rows: int, blocks: int):
    import torch
    from torch.utils.data import DataLoader

    from data.order import seed_worker
    reads = BlockReads(path, block_rows, blocks, seed=0)
    return DataLoader(reads, batch_size=None, sampler=range(len(reads)), num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(0)), False


class BlockReads:
    """Item g of epoch 0: `blocks` blocks of `block_rows` consecutive rows (one HDF5 read
    per block and column) taken from a seeded permutation of the file's blocks, shuffled
    together and cut into batches (G, 64, ...). Crops come from each pair's item seed
    (data.order); a wrong face is a row of another speaker among the item's rows."""

    def __init__(self, path: Path, block_rows: int, blocks: int, seed: int):
        import h5py
        self.path, self.block_rows, self.blocks, self.seed = path, block_rows, blocks, seed
        with h5py.File(path, "r") as f:
            rows = f["train"]["speaker_ids"].shape[0]
            self.speaker_ids = f["train"]["speaker_ids"][()]
        self.num_blocks = rows // block_rows
        self._file = None

    def __len__(self) -> int:
        return self.num_blocks // self.blocks

    def __getitem__(self, group: int):
        import h5py
        import torch

        from data.dataset import own_spans
        from data.order import below, derive_seed, item_draws, item_seeds
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        split, k = self._file["train"], self.block_rows
        order = np.random.default_rng(derive_seed(self.seed, 0)).permutation(self.num_blocks)
        starts = np.sort(order[group * self.blocks:(group + 1) * self.blocks]) * k
        speech = np.concatenate([split["waveforms"][s:s + k] for s in starts])
        faces = np.concatenate([split["faces"][s:s + k] for s in starts])
        ids = np.concatenate([self.speaker_ids[s:s + k] for s in starts])
        n = len(ids) // BATCH * BATCH
        local = np.random.default_rng(derive_seed(self.seed, 0, group)).permutation(len(ids))[:n]
        seeds = item_seeds(self.seed, 0, group * len(ids) + np.arange(n))
        wrong_draws, crop_draws = item_draws(seeds, 2)
        by_speaker, first, count = own_spans(ids)
        pick = below(wrong_draws, len(ids) - count[local])
        wrong = by_speaker[np.where(pick < first[local], pick, pick + count[local])]
        crop = below(crop_draws, speech.shape[1] - WINDOW + 1)
        windows = speech[local[:, None], crop[:, None] + np.arange(WINDOW)]
        shape = (n // BATCH, BATCH)
        return (torch.from_numpy(windows).view(*shape, WINDOW),
                torch.from_numpy(faces[local]).view(*shape, FACE, FACE, 3),
                torch.from_numpy(ids[local].astype(np.int64)).view(shape),
                torch.from_numpy(faces[wrong]).view(*shape, FACE, FACE, 3))


def batches_of(item, mode: str):
    """Training batches: the loader's own, or a block item's stored int16 and uint8 cut into
    batches and prepared as data.device_batches does on a device (here on the CPU)."""
    if mode != "buffers":
        yield item
        return
    from data.device_batches import prepared_waveforms
    windows, faces, speakers, wrong = item
    for b in range(len(windows)):
        yield (prepared_waveforms(windows[b].float() / 32768.0)[:, None],
               faces[b].permute(0, 3, 1, 2).float() / 127.5 - 1.0, speakers[b],
               wrong[b].permute(0, 3, 1, 2).float() / 127.5 - 1.0)


def time_loader(args) -> dict:
    join_cgroup(args.cgroup)
    import torch
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.mode != "buffers":
        block_rows = args.read_blocks if args.mode == "read_blocks" else 0
        loader, in_memory = training_loader(Path(args.file), args.num_workers, args.rule,
                                            block_rows)
    else:
        loader, in_memory = block_loader(Path(args.file), args.num_workers, args.block_rows,
                                         args.blocks)
    setup = time.perf_counter() - started
    iterator = iter(loader)
    workers = [worker.pid for worker in getattr(iterator, "_workers", [])]
    sampler = PeakPss(lambda: workers)
    sampler.start()
    pairs, clock = 0, None
    for item in iterator:
        for batch in batches_of(item, args.mode):
            assert batch[1].shape == (BATCH, 3, FACE, FACE)
            if clock is None:
                clock = time.perf_counter()
            else:
                pairs += BATCH
        if time.perf_counter() - clock >= args.seconds:
            break
    elapsed = time.perf_counter() - clock
    sampler.done.set()
    sampler.join()
    sampler.peak = max(sampler.peak, pss_mb([os.getpid(), *sampler.pids()]))
    del iterator                                    # stops the workers
    return {"pairs_per_s": pairs / elapsed, "pairs": pairs, "peak_mb": sampler.peak,
            "setup_s": setup, "in_memory": in_memory}


# ---------------------------------------------------------------- the table

def make_cgroup(parent: Path, name: str, limit_bytes: int) -> str:
    path = parent / name
    path.mkdir(exist_ok=True)
    (path / "memory.limit_in_bytes").write_text(f"{limit_bytes}\n")
    (path / "memory.max_usage_in_bytes").write_text("0\n")
    return str(path.relative_to(CGROUP_ROOT))


def run_child(args, cgroup: str, file: Path, mode: str, workers: int, rule: str = "trainer"):
    command = [sys.executable, __file__, "--child", "--cgroup", cgroup, "--file", str(file),
               "--mode", mode, "--num_workers", str(workers), "--rule", rule,
               "--seconds", str(args.seconds), "--block_rows", str(args.block_rows),
               "--blocks", str(args.blocks), "--read_blocks", str(args.read_blocks)]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.seconds + 120)
    except subprocess.TimeoutExpired:
        return {"failed": "no batch for 2 min (a worker OOM-killed?)"}
    if done.returncode and not done.stdout.strip():
        killed = done.returncode in (-9, 137) or "Killed" in done.stderr
        return {"failed": "OOM-killed" if killed else f"exit {done.returncode}: "
                + (done.stderr.strip().splitlines() or [""])[-1][:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(args) -> None:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    limit = int(args.limit_gb * GB)
    files = {"big": folder / "loader_scale_big.h5", "small": folder / "loader_scale_small.h5"}
    sizes = {"big": 2 * args.limit_gb, "small": args.small_gb}
    parent = CGROUP_ROOT / args.cgroup_parent
    try:
        for name, path in files.items():
            if not path.exists():
                started = time.perf_counter()
                rows = write_pairs(path, sizes[name])
                print(f"wrote {path} ({rows} pairs, {path.stat().st_size / GB:.2f} GB) in "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
        cgroup = make_cgroup(parent, "loader_scale", limit)
        rows, checks = [], []
        cases = [("big", "cold", mode, w) for mode in args.modes for w in args.workers]
        cases += [("small", "warm", mode, w) for mode in args.modes for w in args.workers]
        for name, cache, mode, workers in cases:
            path = files[name]
            if cache == "cold":
                checks.append(cold_check(path))
            else:                                   # warm: read it once into the page cache
                drop_caches()
                subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
            make_cgroup(parent, "loader_scale", limit)
            before = load()
            result = run_child(args, cgroup, path, mode, workers)
            label = {"read_blocks": f"--read_blocks {args.read_blocks}",
                     "buffers": f"buffers {args.blocks}x{args.block_rows}"}.get(mode, mode)
            rows.append((path.stat().st_size / GB, args.limit_gb, cache, label, workers,
                         result, before, load()))
            print(rows[-1], flush=True)
        tight = args.small_gb * 0.8
        cgroup = make_cgroup(parent, "loader_scale", int(tight * GB))
        drop_caches()
        for rule in ("former", "trainer"):
            before = load()
            result = run_child(args, cgroup, files["small"], "per-pair", 0, rule)
            rows.append((files["small"].stat().st_size / GB, tight, f"cold, {rule} rule",
                         "per-pair", 0, result, before, load()))
            print(rows[-1], flush=True)
        print_table(rows, checks)
    finally:
        if not args.keep:
            for path in files.values():
                path.unlink(missing_ok=True)
        (parent / "loader_scale").rmdir() if (parent / "loader_scale").exists() else None


def print_table(rows, checks) -> None:
    first, again, cached = ([c[i] for c in checks] for i in range(3))
    print(f"\n{cpu_name()}, {os.cpu_count()} cores; each timing in a memory cgroup of the "
          "limit shown (page cache charged to it, workers inside it), the 'big' file twice "
          "that limit. Cold: caches dropped before the timing; a 32 MB plain read right "
          f"after dropping ran {min(first):.0f}-{max(first):.0f} MB/s, its re-read "
          f"{min(again):.0f}-{max(again):.0f} MB/s (the VM's disk may be cached by its host), "
          f"and at most {max(cached):.1f} MB of the file stayed cached (fincore). Peak memory: "
          "the largest sum of PSS of the process and its workers (0.5 s samples; page cache "
          "excluded). Load average (1, 5, 15 min) before -> after each timing.\n")
    print("| file GB | memory limit GB | cache | mode | workers | pairs/s | peak RSS MB (PSS sum) "
          "| in memory | load before -> after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, limit, cache, mode, workers, result, before, after in rows:
        if "failed" in result:
            rate, peak, held = result["failed"], "-", "-"
        else:
            rate, peak = f"{result['pairs_per_s']:,.0f}", f"{result['peak_mb']:,.0f}"
            held = "yes" if result["in_memory"] else "no"
        print(f"| {size:.2f} | {limit:.2f} | {cache} | {mode} | {workers} | {rate} | {peak} "
              f"| {held} | {before} -> {after} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit_gb", type=float, default=2.0)
    parser.add_argument("--small_gb", type=float, default=0.7)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 8])
    parser.add_argument("--modes", nargs="+", default=["per-pair", "read_blocks", "buffers"],
                        choices=("per-pair", "read_blocks", "buffers"))
    parser.add_argument("--read_blocks", type=int, default=16,
                        help="read_blocks: the trainer's --read_blocks ROWS")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--block_rows", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--dir", default="/tmp/loader_scale")
    parser.add_argument("--cgroup_parent", default=os.environ.get("LOADER_CGROUP_PARENT", ""),
                        help="a cgroup under /sys/fs/cgroup/memory this user may make children in")
    parser.add_argument("--keep", action="store_true", help="keep the pair files")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--cgroup", "--file", "--mode", "--rule"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--num_workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_loader(args)), flush=True)
        os._exit(0)     # h5py and torch at interpreter exit hung or crashed 2 of ~20 runs
    else:
        measure(args)


if __name__ == "__main__":
    main()
