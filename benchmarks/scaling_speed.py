"""Time what scaling up costs: each --precision, the EMA update, and N DDP processes; print tables.

    python benchmarks/scaling_speed.py                          # cpu; cuda too when present
    python benchmarks/scaling_speed.py --batch_size 64 --processes 1 2 4 --devices cuda

Table 1: median seconds per GanStep (D step + G step) per device and precision, and the
EMA update's median milliseconds (it runs once per step under --ema). Table 2: the same
step under torchrun with N processes (DDP, gloo on CPU, NCCL on CUDA), each with
--batch_size pairs: seconds per step on rank 0 and global pairs per second. On CPU the N
processes share the machine's cores, so table 2 there shows the cost of communication,
not a speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import runtime  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from models.ema import GeneratorEma  # noqa: E402
from train_speed import fake_batch, print_table, synchronize, time_step  # noqa: E402  (this folder is on sys.path)
from models.gan_step import GanStep  # noqa: E402
from utils import process_group  # noqa: E402

RESULT = "RESULT "


def bench_precision(device, precision: str, bench) -> dict:
    options = runtime.config_for(["--precision", precision], device)
    model = SpeechToFace(ModelArgs(image_size=bench.image_size, num_speakers=8)).to(device)
    step = GanStep(model, options, device)
    batch = tuple(t.to(device) for t in fake_batch(bench.batch_size, bench.image_size,
                                                   model.args.audio_samples, 8))
    median = statistics.median(time_step(step, batch, device, bench.warmup, bench.repeats))
    return {"device": device.type, "precision": precision, "s/step": median,
            "pairs/s": bench.batch_size / median, "ema ms": 1000 * ema_update_time(model, device)}


def ema_update_time(model: SpeechToFace, device, repeats: int = 20) -> float:
    ema = GeneratorEma(model, 0.999)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        ema.update()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(bench) -> None:
    """One torchrun process: time DDP steps on synthetic batches; rank 0 prints a result."""
    with process_group(torch.device(bench.devices[0])) as ranks:
        device = ranks.device
        options = runtime.config_for(["--precision", bench.precision], device, ranks)
        torch.manual_seed(ranks.rank)
        model = SpeechToFace(ModelArgs(image_size=bench.image_size, num_speakers=8)).to(device)
        step = GanStep(model, options, device, ranks)
        batch = tuple(t.to(device) for t in fake_batch(bench.batch_size, bench.image_size,
                                                       model.args.audio_samples, 8))
        median = statistics.median(time_step(step, batch, device, bench.warmup, bench.repeats))
        if ranks.is_main:
            print(RESULT + json.dumps({"world_size": ranks.world_size, "s/step": median}))


def bench_processes(processes: int, device: str, bench) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", __file__, "--worker", "--devices", device,
               "--precision", bench.precision, "--batch_size", str(bench.batch_size),
               "--image_size", str(bench.image_size), "--warmup", str(bench.warmup),
               "--repeats", str(bench.repeats)]
    # Each process gets its share of the cores, as torchrun's default of one thread would not.
    threads = max(1, (os.cpu_count() or 1) // processes) if device == "cpu" else 1
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    line = next((out for out in result.stdout.splitlines() if out.startswith(RESULT)), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"torchrun with {processes} processes failed:\n{result.stderr[-2000:]}")
    row = json.loads(line[len(RESULT):])
    return {"device": device, "processes": processes, "threads each": threads,
            "s/step": row["s/step"], "global pairs/s": processes * bench.batch_size / row["s/step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16, help="pairs per process")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--devices", nargs="+",
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--precision", default="fp32", help="precision of the DDP table")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    bench = parser.parse_args()
    if bench.worker:
        return worker(bench)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, batch {bench.batch_size}, "
          f"{bench.image_size} px, 1 s of speech")
    rows = [bench_precision(torch.device(d), p, bench) for d in bench.devices
            for p in bench.precisions]
    print_table(rows, ["device", "precision", "s/step", "pairs/s", "ema ms"])
    print()
    rows = [bench_processes(n, d, bench) for d in bench.devices for n in bench.processes]
    print_table(rows, ["device", "processes", "threads each", "s/step", "global pairs/s"])


if __name__ == "__main__":
    main()
