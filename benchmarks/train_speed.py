"""Time a full training iteration and each of its parts; print one table.

    python benchmarks/train_speed.py                       # cpu; cuda too when present
    python benchmarks/train_speed.py --batch_sizes 64 --image_sizes 64 --repeats 7
    python benchmarks/train_speed.py --precisions fp32 bf16     # autocast (--precision)

Each row: median seconds per iteration over --repeats timed iterations (after --warmup),
samples/s, and the median time of each labelled part of GanStep (torch.profiler ranges:
encoder+G forward, D forward, D backward+Adam, G-side losses, G backward+Adam).
A second table times the data path alone (DataLoader over the demo set) against the step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from models.gan_step import GanStep  # noqa: E402

PARTS = ("encoder_and_generator_forward", "discriminator_forward",
         "discriminator_backward_and_adam", "generator_losses_forward",
         "generator_backward_and_adam")


def fake_batch(batch_size: int, image_size: int, audio_samples: int, speakers: int):
    faces = lambda: torch.rand(batch_size, 3, image_size, image_size) * 2 - 1  # noqa: E731
    return (torch.randn(batch_size, 1, audio_samples), faces(),
            torch.randint(speakers, (batch_size,)), faces())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(step: GanStep, batch, device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` full steps (D and G) after `warmup` ones."""
    for _ in range(warmup):
        step(batch, step.d_iters)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step(batch, step.d_iters)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def part_times(step: GanStep, batch, device) -> dict[str, float]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step(batch, step.d_iters)
        synchronize(device)
    result = {}
    for event in prof.key_averages():
        if event.key in PARTS:
            total = event.device_time_total if device.type == "cuda" else event.cpu_time_total
            result[event.key] = total / 1e6
    return result


def bench_step(device, batch_size, image_size, options, warmup, repeats) -> dict:
    args = ModelArgs(image_size=image_size, num_speakers=8)
    model = SpeechToFace(args).to(device, memory_format=torch.channels_last)   # as Trainer
    step = GanStep(model, options, device)
    batch = tuple(t.to(device) for t in fake_batch(batch_size, image_size, args.audio_samples, 8))
    times = time_step(step, batch, device, warmup, repeats)
    median = statistics.median(times)
    flops = iteration_flops(step, batch)
    return {"device": device.type, "precision": options.precision, "batch": batch_size,
            "size": image_size,
            "s/iter": median, "samples/s": batch_size / median,
            "GFLOP/sample": flops / batch_size / 1e9, "TFLOP/s": flops / median / 1e12,
            **part_times(step, batch, device)}


def iteration_flops(step: GanStep, batch) -> float:
    """Matrix-multiply and convolution FLOPs of one iteration, forward and backward (what
    a fraction of a device's peak is computed from)."""
    with FlopCounterMode(display=False) as counter:
        step(batch, step.d_iters)
    return float(counter.get_total_flops())


def bench_loader(batch_size: int, workers: int, batches: int = 20) -> float:
    from data.dataset import SpeechFaceDataset
    from data.demo import demo_dataset_path
    from data.schema import validate_pair_file
    from torch.utils.data import DataLoader
    info = validate_pair_file(demo_dataset_path())
    dataset = SpeechFaceDataset(info, "train", 16000, 64, train=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0)
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for count, _ in enumerate(iterator, 1):
        if count == batches:
            break
    return count * batch_size / (time.perf_counter() - start)


def print_table(rows: list[dict], columns: list[str], width: int = 14) -> None:
    print(" | ".join(f"{c:>{width}}" for c in columns))
    print("-+-".join("-" * width for _ in columns))
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print(" | ".join(f"{c:>{width}.4g}" if isinstance(c, float) else f"{c!s:>{width}}"
                         for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--devices", nargs="+",
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32"],
                        choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--loader_workers", type=int, nargs="+", default=[0, 2])
    bench = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [bench_step(torch.device(d), b, s, runtime.build_parser().parse_args(
                ["--precision", p]), bench.warmup, bench.repeats)
            for d in bench.devices for p in bench.precisions for s in bench.image_sizes
            for b in bench.batch_sizes]
    print_table(rows, ["device", "precision", "batch", "size", "s/iter", "samples/s",
                       "GFLOP/sample", "TFLOP/s", *PARTS])
    loader_rows = [{"batch": b, "workers": w, "samples/s": bench_loader(b, w)}
                   for b in (64,) for w in bench.loader_workers]
    print()
    print_table(loader_rows, ["batch", "workers", "samples/s"])


if __name__ == "__main__":
    main()
